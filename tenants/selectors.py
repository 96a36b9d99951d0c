"""Reads scoped to the tenant whose schema the connection is on."""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet

from tenants.accounts.models import User
from tenants.models import Tenant


def tenant_user_list() -> QuerySet[User]:
    return User.objects.order_by("-role", "email")


def tenant_current() -> Tenant:
    """The tenant whose schema the connection is on, as a real Tenant row.

    Requests carry the row already; schema_context() and Celery tasks may carry
    only a stand-in with the schema name, so look that up.
    """
    tenant = getattr(connection, "tenant", None)
    if isinstance(tenant, Tenant):
        return tenant
    return Tenant.objects.get(schema_name=connection.schema_name)
