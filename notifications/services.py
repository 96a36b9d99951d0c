"""Digests: pick the users whose digest is due, and send each one exactly once.

Everything here runs with the connection on one tenant's schema (the tasks are
TenantJobs) and never names another tenant.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from notifications.content import DigestContent, digest_content_build
from notifications.delivery import (
    DeliveryRetry,
    deliveries_requeue_stale,
    delivery_attempt,
    delivery_log_write,
    delivery_queue,
    delivery_save,
)
from notifications.emails import email_build
from notifications.models import DigestDelivery
from notifications.selectors import digest_schedule_get
from notifications.transports import EmailTransport, TransportError
from notifications.unsubscribe import unsubscribe_url
from scheduling.jobs import DIGEST_SEND
from scheduling.models import SyncRun, UserSchedule
from scheduling.recurrence import PERIOD_LENGTH
from tenants.accounts.models import User
from tenants.selectors import tenant_current

logger = logging.getLogger(__name__)

# Bounds one dispatcher run; what is left waits for the next run, a few minutes on.
MAX_BATCHES_PER_RUN = 20
# A sync stamps changed_at before it commits, so a digest window must not end after
# the start of a sync still running; one running longer than this is taken as dead.
SYNC_RUN_HORIZON = timedelta(minutes=10)


def digests_dispatch(*, now: datetime | None = None) -> int:
    """Queue one send_digest per user whose digest is due; return how many were queued.

    Each due schedule gets a DigestDelivery for its due instant and moves on to
    its next due time after `now` (missed periods are not sent one by one). A
    schedule locked by a concurrent dispatcher is skipped, and the unique
    (user, period) delivery keeps a repeated dispatch from queuing anything twice.
    """
    now = now or timezone.now()
    until = _window_end(now=now)
    queued = deliveries_requeue_stale(model=DigestDelivery, job=DIGEST_SEND, now=now)
    for _ in range(MAX_BATCHES_PER_RUN):
        with transaction.atomic():
            due = _due_schedules(now=now)
            for schedule in due:
                queued += _dispatch_one(schedule=schedule, now=now, until=until)
            UserSchedule.objects.bulk_update(due, ["next_due_at"])  # no signals: liveness unchanged
        if len(due) < settings.DIGEST_DISPATCH_BATCH:
            break
    return queued


def _due_schedules(*, now: datetime) -> list[UserSchedule]:
    previous_until = DigestDelivery.objects.filter(user=OuterRef("user")).exclude(
        status=DigestDelivery.Status.FAILED
    )
    return list(
        UserSchedule.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("user")
        .filter(next_due_at__lte=now)
        .annotate(previous_until=Subquery(previous_until.order_by("-period").values("until")[:1]))
        .order_by("next_due_at")[: settings.DIGEST_DISPATCH_BATCH]
    )


def _window_end(*, now: datetime) -> datetime:
    running = SyncRun.objects.filter(
        status=SyncRun.Status.RUNNING, started_at__gte=now - SYNC_RUN_HORIZON
    ).aggregate(first=Min("started_at"))["first"]
    return min(now, running) if running else now


def _dispatch_one(*, schedule: UserSchedule, now: datetime, until: datetime) -> int:
    period = schedule.next_due_at
    schedule.next_due_at = schedule.next_due_after(now)
    if not schedule.user.is_active:
        return 0
    since = schedule.previous_until or until - PERIOD_LENGTH[schedule.frequency]
    delivery, created = DigestDelivery.objects.get_or_create(
        user=schedule.user,
        period=period,
        defaults={"since": min(since, until), "until": until, "recipient": schedule.user.email},
    )
    if created:
        delivery_log_write(delivery)
        delivery_queue(delivery, job=DIGEST_SEND)
    return int(created)


def digest_send(*, delivery_id: str, task_id: str = "", final: bool = True) -> DigestDelivery:
    """Send one queued digest, unless it was settled already; return the delivery.

    The row is locked while sending, so a retried or duplicated task waits and
    then finds it settled. A transient mail failure keeps it queued and raises
    DeliveryRetry, unless this is the `final` attempt; a permanent one (SMTP 5xx)
    fails it and marks the user's address as failing, so later digests skip it.
    """
    try:
        key = uuid.UUID(str(delivery_id))
    except ValueError:
        raise ValidationError(f"{delivery_id!r} is not a delivery id.") from None
    with transaction.atomic():
        delivery = (
            DigestDelivery.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(public_id=key)
            .first()
        )
        if delivery is None:
            raise ValidationError(f"There is no digest delivery {key} in this tenant.")
        if delivery.is_settled:
            return delivery
        failure = _deliver(delivery, final=final, task_id=task_id)
    if failure is not None and not failure.permanent and not final:
        raise DeliveryRetry(failure.message)
    return delivery


def _deliver(delivery: DigestDelivery, *, final: bool, task_id: str) -> TransportError | None:
    user = delivery.user
    schedule = digest_schedule_get(user=user)
    reason = _skip_reason(user=user, schedule=schedule)
    if reason:
        return _skip(delivery, reason)
    assert schedule is not None  # _skip_reason said so
    content = digest_content_build(
        delivery=delivery, frequency=schedule.frequency, zone=schedule.zone
    )
    delivery.record_count = content.total
    if content.total == 0 and not schedule.send_when_empty:
        return _skip(delivery, "Nothing changed in this period.")
    message = _digest_email(delivery=delivery, schedule=schedule, content=content)
    delivery.subject = message.subject[: DigestDelivery._meta.get_field("subject").max_length]
    failure = delivery_attempt(
        delivery, transport=EmailTransport(), message=message, final=final, task_id=task_id
    )
    if failure is None:
        UserSchedule.objects.filter(pk=schedule.pk).update(last_sent_at=delivery.sent_at)
    elif failure.permanent:
        # The server refused this address for good: stop mailing it until someone fixes it.
        User.objects.filter(pk=user.pk).update(
            email_failing_since=timezone.now(), email_failure=failure.message[:500]
        )
    return failure


def _skip_reason(*, user: User, schedule: UserSchedule | None) -> str:
    """Why this digest must not go out now, or "" when it may."""
    if not user.is_active:
        return "The account is deactivated."
    if schedule is None or not schedule.is_live:
        return "Digests were turned off before this one was sent."
    if user.email_failing_since is not None:
        return f"Not sent: mail to {user.email} was refused ({user.email_failure})."
    return ""


def _skip(delivery: DigestDelivery, reason: str) -> None:
    delivery.status, delivery.last_error = DigestDelivery.Status.SKIPPED, reason
    delivery_save(delivery)
    return None


def _digest_email(
    *, delivery: DigestDelivery, schedule: UserSchedule, content: DigestContent
) -> EmailMultiAlternatives:
    tenant = tenant_current()
    unsubscribe = unsubscribe_url(user=delivery.user)
    context = {
        "tenant": tenant,
        "user": delivery.user,
        "delivery": delivery,
        "content": content,
        "frequency": schedule.frequency,
        "zone_name": schedule.timezone,
        "schedule_text": schedule.describe(),
        "settings_url": tenant.url_for("my_digest"),
        "unsubscribe_url": unsubscribe,
    }
    headers = {
        # RFC 2369 and RFC 8058: mail clients offer a one-click unsubscribe button.
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
    }
    with timezone.override(schedule.zone):  # the templates' date filters show local time
        return email_build(
            name="digest", context=context, to=[delivery.user.email], headers=headers
        )
