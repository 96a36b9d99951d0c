"""Reads for digests, inside the tenant's schema."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from scheduling.models import Record


def digest_changes(*, since: datetime, until: datetime) -> QuerySet[Record]:
    """Records that changed in the window (since, until], newest first."""
    return Record.objects.filter(changed_at__gt=since, changed_at__lte=until).order_by(
        "-changed_at", "pk"
    )
