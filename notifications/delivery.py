"""One attempt at a delivery, whatever its channel: count it, send it, record the outcome.

The caller holds the delivery's row lock inside a transaction, so a duplicated or
retried task waits and then finds the row settled. The public DeliveryLog copy is
written in that same transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import DeliveryStatus, DigestDelivery, WebhookDelivery
from notifications.platform.models import DeliveryLog
from notifications.transports import Transport, TransportError
from scheduling.jobs import Job
from tenants.selectors import tenant_current

logger = logging.getLogger(__name__)

LOG_FIELDS = [
    "recipient",
    "status",
    "attempts",
    "last_error",
    "provider_message_id",
    "response_code",
    "updated_at",
    "sent_at",
]


# A queued delivery untouched this long lost its message (a worker crash, a paused
# tenant, a broker outage) and is queued again; the wait outlasts the longest retry
# countdown, so a delivery waiting for its retry is left alone. After a day it fails.
REQUEUE_AFTER = timedelta(seconds=settings.NOTIFY_RETRY_MAX) + timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(days=1)
REQUEUE_BATCH = 500


class DeliveryRetry(Exception):
    """A transient failure with attempts left: the task should retry later."""


def retry_countdown(retries: int) -> int:
    """Seconds before retry number `retries + 1`: exponential, capped."""
    return min(settings.NOTIFY_RETRY_MAX, settings.NOTIFY_RETRY_BASE * 2**retries)


def delivery_queue(delivery: DigestDelivery | WebhookDelivery, *, job: Job) -> None:
    """Once the caller's transaction commits, send `job`'s task for the delivery, with
    the tenant header of the schema the connection is on and the job's expiry."""
    schema = connection.schema_name
    transaction.on_commit(
        lambda: current_app.send_task(
            job.task_name,
            args=[str(delivery.public_id)],
            headers={"_schema_name": schema},
            expires=job.expires,
        ),
        robust=True,  # a broker error loses this message only; deliveries_requeue_stale resends
    )


def deliveries_requeue_stale(
    *, model: type[DigestDelivery | WebhookDelivery], job: Job, now: datetime
) -> int:
    """Queue again the deliveries whose message was lost, fail those lost for a day;
    return how many were queued again."""
    queued = model.objects.filter(status=DeliveryStatus.QUEUED)
    with transaction.atomic():
        lost = queued.filter(created_at__lt=now - GIVE_UP_AFTER).select_for_update(skip_locked=True)
        for delivery in lost[:REQUEUE_BATCH]:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "Never sent: the send task did not run."
            delivery_save(delivery)
    stale = list(queued.filter(updated_at__lt=now - REQUEUE_AFTER)[:REQUEUE_BATCH])
    with transaction.atomic():
        for delivery in stale:
            delivery_queue(delivery, job=job)
    return len(stale)


def delivery_attempt(
    delivery: DigestDelivery | WebhookDelivery,
    *,
    transport: Transport,
    message: Any,
    final: bool,
    task_id: str = "",
) -> TransportError | None:
    """Send `message` once and record the outcome on the locked, queued `delivery`.

    Returns None on success, else the TransportError. A permanent error, or any
    error on the `final` attempt, fails the delivery; a transient one keeps it
    queued for the caller to retry. The caller saves nothing: this does.
    """
    delivery.attempts += 1
    delivery.task_id = task_id or delivery.task_id
    try:
        receipt = transport.notify(message)
    except TransportError as exc:
        logger.warning(
            "%s delivery %s failed (attempt %s, %s): %s",
            transport.channel,
            delivery.public_id,
            delivery.attempts,
            "permanent" if exc.permanent else "transient",
            exc.message,
        )
        delivery.last_error = exc.message
        if isinstance(delivery, WebhookDelivery):
            delivery.response_code = exc.response_code
        if exc.permanent or final:
            delivery.status = DeliveryStatus.FAILED
        delivery_save(delivery)
        return exc
    delivery.status, delivery.sent_at, delivery.last_error = DeliveryStatus.SENT, timezone.now(), ""
    delivery.provider_message_id = receipt.message_id
    if isinstance(delivery, WebhookDelivery):
        delivery.response_code = receipt.response_code
    delivery_save(delivery)
    return None


def delivery_save(delivery: DigestDelivery | WebhookDelivery) -> None:
    """Save the tenant's row and its public copy; call inside the caller's transaction."""
    delivery.save()
    delivery_log_write(delivery)


def delivery_log_write(delivery: DigestDelivery | WebhookDelivery) -> None:
    """Insert or update the public copy of a saved delivery."""
    DeliveryLog.objects.bulk_create(
        [_log_row(delivery)],
        update_conflicts=True,
        unique_fields=["delivery_public_id"],
        update_fields=LOG_FIELDS,
    )


def _log_row(delivery: DigestDelivery | WebhookDelivery) -> DeliveryLog:
    if isinstance(delivery, WebhookDelivery):
        topic = "sync run" if delivery.kind == WebhookDelivery.Kind.RUN else "test"
        response_code = delivery.response_code
    else:
        topic, response_code = "digest", None
    return DeliveryLog(
        tenant=tenant_current(),
        delivery_public_id=delivery.public_id,
        channel=delivery.channel,
        topic=topic,
        recipient=delivery.recipient,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        provider_message_id=delivery.provider_message_id,
        response_code=response_code,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        sent_at=delivery.sent_at,
    )
