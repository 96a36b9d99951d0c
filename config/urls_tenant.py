"""URLs of every tenant site, <slug>.<BASE_DOMAIN>."""

from django.urls import path

from tenants import views
from tenants.accounts import views as account_views

urlpatterns = [
    path("", views.home, name="home"),
    path("users/", views.user_list, name="user_list"),
    path("login/", account_views.tenant_login, name="login"),
    path("logout/", account_views.logout, name="logout"),
]
