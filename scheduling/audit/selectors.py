"""Reads of a tenant's own audit trail."""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent
from tenants.models import Tenant

EVENTS_PER_PAGE = 50


def tenant_audit_event_page(
    *, tenant: Tenant, action: str | None = None, page: object = 1, per_page: int = EVENTS_PER_PAGE
) -> Page:
    """One page of the tenant's events, newest first, optionally of one action.

    Read from the tenant's own schema, named explicitly: the table also exists in
    public (every tenant's events), which a search path ending in public could
    reach. The tenant filter holds even then. A page number that is not a number
    gives the first page, one past the end the last. Two queries.
    """
    events = AuditEvent.objects.filter(tenant_slug=tenant.schema_name).order_by(
        "-occurred_at", "-id"
    )
    if action:
        events = events.filter(action=action)
    with schema_context(tenant.schema_name):
        result = Paginator(events, per_page).get_page(page)
        result.object_list = list(result.object_list)  # read here, inside the schema
    return result
