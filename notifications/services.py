"""Digests: pick the users whose digest is due, and send each one exactly once.

Everything here runs with the connection on one tenant's schema (the tasks are
TenantJobs) and never names another tenant.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from notifications.delivery import DeliveryRetry
from notifications.emails import email_build
from notifications.models import DigestDelivery
from notifications.selectors import digest_changes
from scheduling.jobs import DIGEST_SEND
from scheduling.models import SyncRun, UserSchedule
from scheduling.recurrence import PERIOD_LENGTH
from tenants.selectors import tenant_current

logger = logging.getLogger(__name__)

# Bounds one dispatcher run; what is left waits for the next run, a few minutes on.
MAX_BATCHES_PER_RUN = 20
# A delivery still pending this long after it was queued lost its message (a worker
# crash, a paused tenant, a broker hiccup) and is queued again; after a day it fails.
REQUEUE_AFTER = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(days=1)
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
    queued = _stale_requeue(now=now)
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
        user=schedule.user, period=period, defaults={"since": min(since, until), "until": until}
    )
    if created:
        _send_on_commit(delivery)
    return int(created)


def _send_on_commit(delivery: DigestDelivery) -> None:
    schema = connection.schema_name
    transaction.on_commit(
        lambda: current_app.send_task(
            DIGEST_SEND.task_name,
            args=[str(delivery.public_id)],
            headers={"_schema_name": schema},
        ),
        robust=True,  # a broker error loses this message only; _stale_requeue retries it
    )


def _stale_requeue(*, now: datetime) -> int:
    """Queue again the deliveries whose message was lost; fail those lost for too long."""
    pending = DigestDelivery.objects.filter(status=DigestDelivery.Status.QUEUED)
    pending.filter(created_at__lt=now - GIVE_UP_AFTER).update(
        status=DigestDelivery.Status.FAILED, last_error="Never sent: the send task did not run."
    )
    stale = list(
        pending.filter(created_at__lt=now - REQUEUE_AFTER)[: settings.DIGEST_DISPATCH_BATCH]
    )
    with transaction.atomic():
        for delivery in stale:
            _send_on_commit(delivery)
    return len(stale)


def digest_send(*, delivery_id: str, task_id: str = "", final: bool = True) -> DigestDelivery:
    """Send one queued digest, unless it was sent already; return the delivery.

    The row is locked while sending, so a retried or duplicated task waits and
    then finds it settled. A backend failure is recorded; with `final` the
    delivery is marked failed, otherwise DigestSendError is raised for a retry.
    """
    try:
        key = uuid.UUID(str(delivery_id))
    except ValueError:
        raise ValidationError(f"{delivery_id!r} is not a delivery id.") from None
    failure = None
    with transaction.atomic():
        delivery = (
            DigestDelivery.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(public_id=key)
            .first()
        )
        if delivery is None:
            raise ValidationError(f"There is no digest delivery {key} in this tenant.")
        if delivery.status != DigestDelivery.Status.QUEUED:
            return delivery
        delivery.attempts += 1
        delivery.task_id = task_id
        failure = _deliver(delivery)
        if failure is not None:
            delivery.last_error = failure
            if final:
                delivery.status = DigestDelivery.Status.FAILED
        delivery.save()
    if failure is not None and not final:
        raise DeliveryRetry(failure)
    return delivery


def _deliver(delivery: DigestDelivery) -> str | None:
    """Send the email, or settle the delivery as empty; returns an error message or None."""
    changes = digest_changes(since=delivery.since, until=delivery.until)
    total = changes.count()
    if total == 0:
        delivery.status = DigestDelivery.Status.SKIPPED  # nothing changed: no email
        return None
    message = _digest_email(delivery=delivery, changes=changes, total=total)
    try:
        message.send()
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("Digest %s could not be sent: %s", delivery.public_id, exc)
        return f"The email could not be sent: {exc}"
    now = timezone.now()
    delivery.status, delivery.sent_at, delivery.last_error = DigestDelivery.Status.SENT, now, ""
    delivery.record_count, delivery.subject = total, message.subject
    UserSchedule.objects.filter(user=delivery.user, kind=UserSchedule.Kind.DIGEST).update(
        last_sent_at=now
    )
    return None


def _digest_email(*, delivery: DigestDelivery, changes, total: int):
    schedule = UserSchedule.objects.filter(
        user=delivery.user, kind=UserSchedule.Kind.DIGEST
    ).first()
    zone = schedule.zone if schedule else timezone.get_default_timezone()
    records = list(changes[: settings.DIGEST_MAX_RECORDS])
    items = [
        {"record": record, "is_new": record.first_seen_at == record.changed_at}
        for record in records
    ]
    context = {
        "tenant": tenant_current(),
        "user": delivery.user,
        "delivery": delivery,
        "total": total,
        "items": items,
        "more": total - len(records),
        "zone_name": str(zone),
        "schedule_text": schedule.describe() if schedule else "",
    }
    with timezone.override(zone):  # the template's date filters show the user's local time
        return email_build(name="digest", context=context, to=[delivery.user.email])
