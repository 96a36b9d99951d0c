from django.contrib.auth import views as auth_views

from tenants.accounts.forms import OperatorAuthenticationForm, ThrottledAuthenticationForm

tenant_login = auth_views.LoginView.as_view(
    template_name="account/login.html",
    authentication_form=ThrottledAuthenticationForm,
    redirect_authenticated_user=True,
)
operator_login = auth_views.LoginView.as_view(
    template_name="account/login.html",
    authentication_form=OperatorAuthenticationForm,
    redirect_authenticated_user=True,
    extra_context={"operator": True},
)
logout = auth_views.LogoutView.as_view()
