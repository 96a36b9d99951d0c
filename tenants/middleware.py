"""Route each request to its schema and URL conf by host name.

BASE_DOMAIN (and PUBLIC_HOSTS_EXTRA) is the operator site in the public schema;
<slug>.<BASE_DOMAIN> or any other registered Domain is that tenant's site; any
other host gets a plain 404 page, never a stack trace.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.shortcuts import render
from django.urls import set_urlconf
from django_tenants.middleware.main import TenantMainMiddleware

from tenants.models import Domain


class TenantRoutingMiddleware(TenantMainMiddleware):
    def process_request(self, request):
        connection.set_schema_to_public()
        try:
            hostname = self.hostname_from_request(request)
        except DisallowedHost:
            return self.no_tenant_found(request, "")
        if hostname in settings.PUBLIC_HOSTS:
            request.tenant = connection.tenant
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
            set_urlconf(request.urlconf)
            return None
        return super().process_request(request)

    @staticmethod
    def hostname_from_request(request):
        return request.get_host().split(":")[0].lower()

    def get_tenant(self, domain_model, hostname):
        return Domain.objects.select_related("tenant").get(domain=hostname).tenant

    def no_tenant_found(self, request, hostname):
        return render(request, "errors/unknown_host.html", {"hostname": hostname}, status=404)
