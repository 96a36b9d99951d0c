from django.contrib.auth import views as auth_views
from django.http import Http404
from django.shortcuts import render

from tenants.accounts.decorators import tenant_admin_required
from tenants.accounts.forms import OperatorAuthenticationForm, ThrottledAuthenticationForm
from tenants.selectors import tenant_user_list

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


@tenant_admin_required
def user_list(request):
    return render(request, "tenant/users.html", {"users": tenant_user_list()})


def account(request):
    raise Http404  # STUB


user_create = user_edit = account
