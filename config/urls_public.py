"""URLs of the operator site on BASE_DOMAIN, served from the public schema."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from scheduling.platform import prometheus, status_api
from tenants.accounts import views as account_views

admin.site.site_header = "Scheduler operations"
admin.site.site_title = "Scheduler operations"
admin.site.index_title = "Platform"
# The sidebar repeats the index's app list on every page, at a cost on each list request.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("login/", account_views.operator_login, name="login"),
    path("logout/", account_views.logout, name="logout"),
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    path("metrics", prometheus.metrics_view, name="metrics"),
    path("api/status/schedules", status_api.schedules_status, name="api-status-schedules"),
]
