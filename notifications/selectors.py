"""Reads for digests, inside the tenant's schema."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django.db.models import QuerySet

from notifications.models import DigestDelivery, WebhookDelivery
from scheduling.models import Record, UserSchedule
from tenants.accounts.models import User
from tenants.models import Tenant

# How many past digests the "My digest" page lists.
DIGEST_HISTORY_LENGTH = 20
# How many webhook deliveries the Webhook page lists.
WEBHOOK_HISTORY_LENGTH = 25


def digest_changes(*, since: datetime, until: datetime) -> QuerySet[Record]:
    """Records that changed in the window (since, until], newest first."""
    return Record.objects.filter(changed_at__gt=since, changed_at__lte=until).order_by(
        "-changed_at", "pk"
    )


def digest_schedule_get(*, user: User) -> UserSchedule | None:
    """The user's own digest schedule, or None before they first save one."""
    return UserSchedule.objects.filter(user=user, kind=UserSchedule.Kind.DIGEST).first()


def digest_zone(*, schedule: UserSchedule | None, tenant: Tenant) -> ZoneInfo:
    """The zone the user reads digest times in: their schedule's, else the tenant's."""
    return ZoneInfo(schedule.timezone if schedule is not None else tenant.timezone)


def digest_deliveries_recent(
    *, user: User, limit: int = DIGEST_HISTORY_LENGTH
) -> list[DigestDelivery]:
    """The user's own latest digests, newest period first."""
    return list(DigestDelivery.objects.filter(user=user).order_by("-period")[:limit])


def webhook_deliveries_recent(*, limit: int = WEBHOOK_HISTORY_LENGTH) -> list[WebhookDelivery]:
    """The tenant's latest webhook deliveries, newest first."""
    return list(WebhookDelivery.objects.order_by("-created_at", "-id")[:limit])
