"""Reads of each schema's trail."""

from __future__ import annotations

from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent


def events(schema: str = "public", **filters) -> list[AuditEvent]:
    """The events stored in `schema`, oldest first."""
    with schema_context(schema):
        return list(AuditEvent.objects.filter(**filters).order_by("occurred_at", "id"))
