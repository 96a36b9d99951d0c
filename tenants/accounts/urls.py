from django.urls import path

from tenants.accounts import views

urlpatterns = [
    path("login/", views.tenant_login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("account/", views.account, name="account"),
    path("users/", views.user_list, name="user_list"),
    path("users/new/", views.user_create, name="user_create"),
    path("users/<uuid:public_id>/", views.user_edit, name="user_edit"),
]
