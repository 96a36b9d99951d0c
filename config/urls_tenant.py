"""URLs of every tenant site, <slug>.<BASE_DOMAIN>. Each app owns its pages."""

from django.urls import include, path

urlpatterns = [
    path("", include("scheduling.urls")),
    path("", include("notifications.urls")),
    path("", include("tenants.accounts.urls")),
    path("", include("scheduling.audit.urls")),
]
