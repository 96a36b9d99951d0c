from django.urls import path

from tenants.accounts import views

urlpatterns = [
    path("login/", views.tenant_login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("account/", views.account, name="account"),
    path("users/", views.user_list, name="user_list"),
    path("users/new/", views.user_create, name="user_create"),
    path("users/<uuid:public_id>/", views.user_edit, name="user_edit"),
    path("users/<uuid:public_id>/invite/", views.user_invite_resend, name="user_invite_resend"),
    path("invite/<uuid:public_id>/<str:token>/", views.invite_accept, name="invite_accept"),
]
