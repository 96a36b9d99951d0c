"""Tenant webhooks: after each sync run, a signed JSON summary POSTed to the tenant's URL.

The payload is stored on the delivery when it is queued, and the body is built
from it byte for byte the same way on every attempt, so a retry sends the same
body (and, while the secret is unchanged, the same signature). The receiver
checks `X-Webhook-Signature: sha256=<hex>`, an HMAC-SHA256 of the raw body with
the tenant's secret, and may use `X-Webhook-Id` to ignore a delivery it has seen.

Everything here runs with the connection on one tenant's schema.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from notifications.delivery import (
    DeliveryRetry,
    deliveries_requeue_stale,
    delivery_attempt,
    delivery_queue,
    delivery_save,
)
from notifications.models import WebhookDelivery
from notifications.transports import WebhookMessage, WebhookTransport
from scheduling.audit.models import Action
from scheduling.audit.services import audit_record
from scheduling.fetch import FetchError, vetted_address
from scheduling.jobs import WEBHOOK_SEND
from scheduling.models import SyncRun
from tenants.models import Tenant

logger = logging.getLogger(__name__)

EVENT_RUN = "sync_run.finished"
EVENT_TEST = "webhook.test"
USER_AGENT = "scheduler-webhook/1"
URL_MAX_LENGTH = Tenant._meta.get_field("webhook_url").max_length


# --- Queueing ---------------------------------------------------------------------


def webhook_delivery_queue(*, run: SyncRun, tenant: Tenant) -> WebhookDelivery | None:
    """The run's webhook delivery, created and queued once; None when the tenant has no URL.

    Called inside the run's own transaction. It never raises: a webhook problem is
    logged and must not fail or roll back the sync run it reports on.
    """
    try:
        with transaction.atomic():  # a savepoint: an error here leaves the run's writes alone
            deliveries_requeue_stale(model=WebhookDelivery, job=WEBHOOK_SEND, now=timezone.now())
            if not tenant.webhook_url:
                return None
            delivery = WebhookDelivery.objects.filter(sync_run=run).first()
            if delivery is None:
                delivery = WebhookDelivery(kind=WebhookDelivery.Kind.RUN, sync_run=run)
                _queue(delivery, tenant=tenant, payload=_run_summary(run))
            return delivery
    except Exception:
        logger.exception("The webhook of sync run %s could not be queued", run.public_id)
        return None


def webhook_test_send(*, tenant: Tenant) -> WebhookDelivery:
    """Queue a small test POST to the tenant's webhook; ValidationError when none is set."""
    if not tenant.webhook_url:
        raise ValidationError("Set a webhook URL before sending a test delivery.")
    with transaction.atomic():
        delivery = WebhookDelivery(kind=WebhookDelivery.Kind.TEST)
        _queue(delivery, tenant=tenant, payload={})
    return delivery


def _queue(delivery: WebhookDelivery, *, tenant: Tenant, payload: dict[str, Any]) -> None:
    event = EVENT_RUN if delivery.kind == WebhookDelivery.Kind.RUN else EVENT_TEST
    delivery.recipient = tenant.webhook_url
    delivery.payload = {
        "event": event,
        "delivery_id": str(delivery.public_id),
        "created_at": _iso(timezone.now()),
        "tenant": {"slug": tenant.schema_name, "name": tenant.name},
        **payload,
    }
    delivery_save(delivery)
    delivery_queue(delivery, job=WEBHOOK_SEND)


def _run_summary(run: SyncRun) -> dict[str, Any]:
    return {
        "run": {
            "id": str(run.public_id),
            "status": run.status,
            "nominal_start": _iso(run.nominal_start),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "created": run.created_count,
            "updated": run.updated_count,
            "unchanged": run.unchanged_count,
            "error": run.error,
        }
    }


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC, always to the millisecond: 2026-06-08T08:00:00.000Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Signing --------------------------------------------------------------------


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed for a stored payload: sorted keys, no spaces, ASCII."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The X-Webhook-Signature value: sha256= and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_message(*, delivery: WebhookDelivery, url: str, secret: str) -> WebhookMessage:
    body = webhook_body(delivery.payload)
    headers = {
        "X-Webhook-Signature": webhook_signature(secret=secret, body=body),
        "X-Webhook-Id": str(delivery.public_id),
        "X-Webhook-Event": delivery.payload.get("event", ""),
        "User-Agent": USER_AGENT,
    }
    return WebhookMessage(url=url, body=body, headers=headers)


# --- Sending --------------------------------------------------------------------


def webhook_send(*, delivery_id: str, task_id: str = "", final: bool = True) -> WebhookDelivery:
    """POST one queued delivery, unless it is settled already; return the delivery.

    The row is locked while sending, so a duplicated task waits and then finds it
    settled. A failure that ends the delivery marks the tenant's webhook failing;
    a success clears that. A transient failure with attempts left raises
    DeliveryRetry. A bad or foreign id raises ValidationError.
    """
    try:
        key = uuid.UUID(str(delivery_id))
    except ValueError:
        raise ValidationError(f"{delivery_id!r} is not a delivery id.") from None
    # Fresh, not the worker's cached tenant: the URL or secret may have just changed.
    tenant = Tenant.objects.get(schema_name=connection.schema_name)
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(public_id=key).first()
        if delivery is None:
            raise ValidationError(f"There is no webhook delivery {key} in this tenant.")
        if delivery.is_settled:
            return delivery
        if not tenant.webhook_url or not tenant.webhook_secret:
            _skip(delivery, tenant=tenant)
            return delivery
        delivery.recipient = tenant.webhook_url  # the URL may have changed since it was queued
        failure = delivery_attempt(
            delivery,
            transport=WebhookTransport(),
            message=webhook_message(
                delivery=delivery, url=tenant.webhook_url, secret=tenant.webhook_secret
            ),
            final=final,
            task_id=task_id,
        )
        _failing_state_update(tenant=tenant, delivery=delivery)
    if failure is not None and not delivery.is_settled:
        raise DeliveryRetry(failure.message)
    return delivery


def _skip(delivery: WebhookDelivery, *, tenant: Tenant) -> None:
    delivery.status = WebhookDelivery.Status.SKIPPED
    delivery.last_error = (
        "The webhook URL was removed before this delivery was sent."
        if not tenant.webhook_url
        else "The webhook has no signing secret; rotate the secret to create one."
    )
    delivery_save(delivery)


def _failing_state_update(*, tenant: Tenant, delivery: WebhookDelivery) -> None:
    # update(), not save(): save() would run the tenant's schedule and audit signals.
    tenants = Tenant.objects.filter(pk=tenant.pk)
    if delivery.status == WebhookDelivery.Status.SENT:
        tenants.filter(webhook_failing_since__isnull=False).update(
            webhook_failing_since=None, webhook_failure=""
        )
    elif delivery.status == WebhookDelivery.Status.FAILED:
        tenants.update(
            webhook_failing_since=Coalesce("webhook_failing_since", timezone.now()),
            webhook_failure=delivery.last_error[:500],
        )


# --- Settings -------------------------------------------------------------------


def webhook_settings_update(*, tenant: Tenant, url: str) -> list[str]:
    """Set or clear the tenant's webhook URL; return the fields changed.

    ValidationError (keyed webhook_url) for a URL that is not http(s), or whose
    host does not resolve or resolves to a private or local address. The first
    URL gets a new secret; clearing the URL keeps it; a new URL clears the
    failing mark. Saved with save(), so the audit trail records the change.
    """
    url = url.strip()
    if url:
        _url_check(url)
    values: dict[str, Any] = {"webhook_url": url}
    if url and not tenant.webhook_secret:
        values["webhook_secret"] = secrets.token_urlsafe(32)
    if url != tenant.webhook_url:
        values |= {"webhook_failing_since": None, "webhook_failure": ""}
    changed = [name for name, value in values.items() if getattr(tenant, name) != value]
    if changed:
        candidate = copy.copy(tenant)  # `tenant` changes only once the row is saved
        for name in changed:
            setattr(candidate, name, values[name])
        with transaction.atomic():
            candidate.save(update_fields=changed)
        for name in changed:
            setattr(tenant, name, values[name])
    return changed


def _url_check(url: str) -> None:
    def refuse(message: str) -> ValidationError:
        return ValidationError({"webhook_url": message})

    if len(url) > URL_MAX_LENGTH:
        raise refuse(f"Use at most {URL_MAX_LENGTH} characters.")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise refuse("Enter an http:// or https:// URL.") from None
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        vetted_address(parts.hostname or "", port)
    except ValueError:
        raise refuse("The port is not a valid number.") from None
    except FetchError as exc:  # unresolvable, or a private or local address
        raise refuse(str(exc)) from None


def webhook_secret_rotate(*, tenant: Tenant) -> str:
    """Replace the tenant's signing secret and return the new one; audited without it."""
    secret = secrets.token_urlsafe(32)
    had_secret = bool(tenant.webhook_secret)
    with transaction.atomic():
        # update(), not save(): this is its own audit event, not a settings change.
        Tenant.objects.filter(pk=tenant.pk).update(webhook_secret=secret)
        audit_record(
            action=Action.WEBHOOK_SECRET_ROTATED,
            target=f"tenant:{tenant.schema_name}",
            before={"webhook_secret": "set" if had_secret else "not set"},
            after={"webhook_secret": "changed" if had_secret else "set"},
            tenant_slug=tenant.schema_name,
        )
    tenant.webhook_secret = secret
    return secret


def webhook_secret_masked(secret: str) -> str:
    """Enough of the secret to tell which one is in use: its last four characters."""
    return f"••••••••{secret[-4:]}" if secret else ""
