"""Thin Celery tasks: the tenant comes from the header, the work from a service."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.conf import settings
from django.core.exceptions import ValidationError

from notifications.delivery import DeliveryRetry, retry_countdown
from notifications.services import digest_send, digests_dispatch
from notifications.webhooks import webhook_send
from scheduling.jobs import DIGEST_DISPATCH, DIGEST_SEND, WEBHOOK_SEND, TenantJob

logger = logging.getLogger(__name__)


@shared_task(base=TenantJob, name=DIGEST_DISPATCH.task_name, ignore_result=True)
def dispatch_digests() -> int:
    return digests_dispatch()


@shared_task(
    base=TenantJob,
    name=DIGEST_SEND.task_name,
    bind=True,
    ignore_result=True,
    max_retries=settings.NOTIFY_MAX_RETRIES,
)
def send_digest(self, delivery_id: str) -> None:
    _attempt(self, digest_send, delivery_id)


@shared_task(
    base=TenantJob,
    name=WEBHOOK_SEND.task_name,
    bind=True,
    ignore_result=True,
    max_retries=settings.NOTIFY_MAX_RETRIES,
)
def send_webhook(self, delivery_id: str) -> None:
    _attempt(self, webhook_send, delivery_id)


def _attempt(task, service: Callable[..., object], delivery_id: str) -> None:
    """One attempt through `service`; retried with backoff while it asks for a retry."""
    final = task.request.retries >= task.max_retries
    try:
        service(delivery_id=delivery_id, task_id=task.request.id or "", final=final)
    except ValidationError as exc:
        # A bad or foreign id never gets better on retry: log it and drop the task.
        logger.error("Dropped %s[%s]: %s", task.name, task.request.id, exc.messages[0])
    except DeliveryRetry as exc:
        raise task.retry(exc=exc, countdown=retry_countdown(task.request.retries)) from exc
