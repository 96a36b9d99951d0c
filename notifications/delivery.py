"""One attempt at a delivery, whatever its channel: count it, send it, record the outcome.

The caller holds the delivery's row lock inside a transaction, so a duplicated or
retried task waits and then finds the row settled. The public DeliveryLog copy is
written in that same transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications.models import DeliveryStatus, DigestDelivery, WebhookDelivery
from notifications.platform.models import DeliveryLog
from notifications.transports import Transport, TransportError
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


class DeliveryRetry(Exception):
    """A transient failure with attempts left: the task should retry later."""


def retry_countdown(retries: int) -> int:
    """Seconds before retry number `retries + 1`: exponential, capped."""
    return min(settings.NOTIFY_RETRY_MAX, settings.NOTIFY_RETRY_BASE * 2**retries)


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
