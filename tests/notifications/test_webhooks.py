"""Tenant webhooks: one signed POST per sync run, retried when it may help, refused for
private addresses, and never sent across tenants. The receiver is a real HTTP server
on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import override_settings
from django_tenants.utils import schema_context

from notifications.delivery import DeliveryRetry
from notifications.models import WebhookDelivery
from notifications.platform.models import DeliveryLog
from notifications.tasks import send_webhook
from notifications.webhooks import (
    webhook_delivery_queue,
    webhook_secret_rotate,
    webhook_send,
    webhook_settings_update,
    webhook_signature,
    webhook_test_send,
)
from scheduling import metrics
from scheduling.models import SyncRun
from scheduling.services import sync_run
from tenants.models import Tenant
from tests.audit.conftest import events
from tests.notifications.webhook_receiver import Receiver, signature_valid

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)


@pytest.fixture
def receivers():
    """Start loopback receivers that answer with the given statuses; all stop after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda *statuses, delay=0.0: stack.enter_context(Receiver(*statuses, delay=delay))


def _hook(tenant: Tenant, receiver: Receiver) -> Receiver:
    webhook_settings_update(tenant=tenant, url=receiver.url)
    receiver.secret = tenant.webhook_secret
    return receiver


def _run(tenant: Tenant) -> tuple[SyncRun, WebhookDelivery | None]:
    with schema_context(tenant.schema_name):
        run = sync_run(tenant=tenant)
        return run, WebhookDelivery.objects.filter(sync_run=run).first()


def _send(delivery: WebhookDelivery, *, final: bool = True, slug: str = "acme"):
    with schema_context(slug):
        return webhook_send(delivery_id=str(delivery.public_id), final=final)


def _stored(delivery: WebhookDelivery) -> WebhookDelivery:
    with schema_context("acme"):
        return WebhookDelivery.objects.get(pk=delivery.pk)


def _tenant(slug: str = "acme") -> Tenant:
    return Tenant.objects.get(schema_name=slug)


# --- Queueing -------------------------------------------------------------------


def test_a_finished_run_queues_one_summary_and_its_task_after_commit(
    tenant_a, receivers, django_capture_on_commit_callbacks
):
    _hook(tenant_a, receivers())
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")

    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=True):
        run, delivery = _run(tenant_a)

    assert (delivery.kind, delivery.status, delivery.recipient) == (
        "run",
        "queued",
        tenant_a.webhook_url,
    )
    assert delivery.payload == {
        "event": "sync_run.finished",
        "delivery_id": str(delivery.public_id),
        "created_at": "2026-06-08T08:00:00.000Z",
        "tenant": {"slug": "acme", "name": "Acme Corp"},
        "run": {
            "id": str(run.public_id),
            "status": "ok",
            "nominal_start": None,
            "started_at": "2026-06-08T08:00:00.000Z",
            "finished_at": "2026-06-08T08:00:00.000Z",
            "created": run.created_count,
            "updated": 0,
            "unchanged": 0,
            "error": "",
        },
    }
    [message] = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert message["headers"]["task"] == "notifications.send_webhook"
    assert message["headers"]["_schema_name"] == "acme"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args == [str(delivery.public_id)]
    log = DeliveryLog.objects.get(delivery_public_id=delivery.public_id)
    assert (log.tenant_id, log.channel, log.topic, log.status) == (
        tenant_a.pk,
        "webhook",
        "sync run",
        "queued",
    )
    broker.delete("celery")


def test_a_failed_run_is_reported_too(tenant_a, receivers):
    _hook(tenant_a, receivers())
    tenant_a.source_kind, tenant_a.source_url = "http_json", "http://127.0.0.1:9/nothing-here"

    run, delivery = _run(tenant_a)

    assert run.status == "failed"
    assert delivery.payload["run"]["status"] == "failed"
    assert delivery.payload["run"]["error"] == run.error != ""


def _sends(callbacks: list) -> list:
    """The commit callbacks that send a delivery; a run also counts itself in the metrics."""
    return [c for c in callbacks if getattr(c, "func", None) is not metrics.sync_run_record]


def test_a_tenant_without_a_url_queues_nothing(tenant_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        run, delivery = _run(tenant_a)

    assert run.status == "ok" and delivery is None and _sends(queued) == []


def test_queueing_twice_for_one_run_keeps_one_delivery(
    tenant_a, receivers, django_capture_on_commit_callbacks
):
    _hook(tenant_a, receivers())
    with django_capture_on_commit_callbacks() as queued:
        run, first = _run(tenant_a)
        with schema_context("acme"):
            again = webhook_delivery_queue(run=run, tenant=tenant_a)
            count = WebhookDelivery.objects.filter(sync_run=run).count()

    assert again.pk == first.pk and count == 1
    assert len(_sends(queued)) == 1


def test_a_delivery_whose_task_was_lost_is_queued_again_by_the_next_run_then_failed(
    tenant_a, receivers, django_capture_on_commit_callbacks
):
    _hook(tenant_a, receivers())
    _, lost = _run(tenant_a)  # queued, but the broker lost its message
    with schema_context("acme"):
        WebhookDelivery.objects.filter(pk=lost.pk).update(
            created_at=NOW - timedelta(hours=2), updated_at=NOW - timedelta(hours=2)
        )
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks() as queued:
        _run(tenant_a)
    with schema_context("acme"):
        WebhookDelivery.objects.filter(pk=lost.pk).update(created_at=NOW - timedelta(days=2))
    with time_machine.travel(NOW, tick=False):
        _run(tenant_a)

    assert len(_sends(queued)) == 2  # the lost one again, and the new run's
    given_up = _stored(lost)
    assert (given_up.status, given_up.last_error) == (
        "failed",
        "Never sent: the send task did not run.",
    )


def test_a_crash_in_the_webhook_code_never_fails_the_run(tenant_a, receivers, monkeypatch, caplog):
    _hook(tenant_a, receivers())

    def broken(run):
        raise RuntimeError("boom")

    monkeypatch.setattr("notifications.webhooks._run_summary", broken)
    run, delivery = _run(tenant_a)

    assert run.status == "ok" and delivery is None
    with schema_context("acme"):
        assert SyncRun.objects.get(pk=run.pk).status == "ok"
    assert f"The webhook of sync run {run.public_id} could not be queued" in caplog.text


# --- Sending --------------------------------------------------------------------


def test_a_500_is_retried_and_the_same_signed_body_then_succeeds(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers(500, 200))
    _, delivery = _run(tenant_a)

    result = send_webhook.apply(args=[str(delivery.public_id)], headers={"_schema_name": "acme"})

    assert result.successful()
    stored = _stored(delivery)
    assert (stored.status, stored.attempts, stored.response_code) == ("sent", 2, 200)
    assert stored.sent_at is not None and stored.last_error == ""
    first, second = receiver.requests
    assert first.body == second.body and json.loads(first.body) == stored.payload
    assert first.signature_valid and second.signature_valid
    assert first.headers["X-Webhook-Id"] == str(delivery.public_id)
    assert first.headers["X-Webhook-Event"] == "sync_run.finished"
    assert first.headers["User-Agent"] == "scheduler-webhook/1"
    assert first.headers["Content-Type"] == "application/json"
    assert first.path == "/hooks/sync"
    assert _tenant().webhook_failing_since is None
    log = DeliveryLog.objects.get(delivery_public_id=delivery.public_id)
    assert (log.status, log.attempts, log.response_code) == ("sent", 2, 200)


def test_a_transient_failure_with_attempts_left_stays_queued(tenant_a, receivers):
    _hook(tenant_a, receivers(503))
    _, delivery = _run(tenant_a)

    with pytest.raises(DeliveryRetry):
        _send(delivery, final=False)

    stored = _stored(delivery)
    assert (stored.status, stored.attempts, stored.response_code) == ("queued", 1, 503)
    assert stored.last_error == "The webhook answered HTTP 503: no"
    assert _tenant().webhook_failing_since is None


def test_a_4xx_fails_at_once_marks_the_tenant_failing_and_a_success_clears_it(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers(404, 404, 200))
    _, first = _run(tenant_a)
    _, second = _run(tenant_a)

    with time_machine.travel(NOW, tick=False):
        send_webhook.apply(args=[str(first.public_id)], headers={"_schema_name": "acme"})
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        _send(second)
    failing = _tenant()

    assert (_stored(first).status, _stored(first).attempts, _stored(first).response_code) == (
        "failed",
        1,
        404,
    )
    assert len(receiver.requests) == 2  # no retry
    assert failing.webhook_failing_since == NOW  # since the first failure
    assert failing.webhook_failure == "The webhook answered HTTP 404: no"

    with schema_context("acme"):
        test_delivery = webhook_test_send(tenant=tenant_a)
    assert _send(test_delivery).status == "sent"
    cleared = _tenant()
    assert (cleared.webhook_failing_since, cleared.webhook_failure) == (None, "")


def test_a_5xx_on_the_last_attempt_fails_the_delivery_and_marks_the_tenant(tenant_a, receivers):
    _hook(tenant_a, receivers(502))
    _, delivery = _run(tenant_a)

    assert _send(delivery, final=True).status == "failed"
    assert _tenant().webhook_failure == "The webhook answered HTTP 502: no"


@override_settings(WEBHOOK_READ_TIMEOUT=1)
def test_a_receiver_slower_than_the_read_timeout_is_a_transient_failure(tenant_a, receivers):
    _hook(tenant_a, receivers(200, delay=2))
    _, delivery = _run(tenant_a)

    with pytest.raises(DeliveryRetry):
        _send(delivery, final=False)

    stored = _stored(delivery)
    assert (stored.status, stored.attempts, stored.response_code) == ("queued", 1, None)
    assert stored.last_error == "127.0.0.1 did not answer in time."


def test_a_private_address_is_refused_without_a_request_and_fails_for_good(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers())  # saved while loopback was allowed
    _, delivery = _run(tenant_a)

    with override_settings(SYNC_FETCH_ALLOW_LOOPBACK=False):
        result = send_webhook.apply(
            args=[str(delivery.public_id)], headers={"_schema_name": "acme"}
        )

    assert result.successful()
    stored = _stored(delivery)
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "private or local address; refused" in stored.last_error
    assert receiver.requests == []
    assert "private or local address" in _tenant().webhook_failure


def test_a_duplicated_task_sends_once(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers())
    _, delivery = _run(tenant_a)

    for _ in range(2):
        send_webhook.apply(args=[str(delivery.public_id)], headers={"_schema_name": "acme"})

    assert len(receiver.requests) == 1
    assert _stored(delivery).attempts == 1


def test_a_delivery_whose_url_was_removed_meanwhile_is_skipped(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers())
    _, delivery = _run(tenant_a)
    webhook_settings_update(tenant=tenant_a, url="")

    sent = _send(delivery)

    assert (sent.status, sent.attempts) == ("skipped", 0)
    assert sent.last_error == "The webhook URL was removed before this delivery was sent."
    assert receiver.requests == []


def test_a_changed_url_gets_the_deliveries_still_queued(tenant_a, receivers):
    old = _hook(tenant_a, receivers())
    _, delivery = _run(tenant_a)
    new = _hook(tenant_a, receivers())

    sent = _send(delivery)

    assert (len(old.requests), len(new.requests)) == (0, 1)
    assert sent.recipient == new.url and sent.status == "sent"


def test_a_test_delivery_posts_a_small_signed_test_event(tenant_a, receivers):
    receiver = _hook(tenant_a, receivers())
    with schema_context("acme"):
        delivery = webhook_test_send(tenant=tenant_a)

    _send(delivery)

    [request] = receiver.requests
    assert request.signature_valid
    body = json.loads(request.body)
    assert body["event"] == "webhook.test" and "run" not in body
    assert body["tenant"] == {"slug": "acme", "name": "Acme Corp"}
    assert _stored(delivery).kind == "test"


def test_a_test_delivery_needs_a_url(tenant_a):
    with schema_context("acme"), pytest.raises(ValidationError, match="Set a webhook URL"):
        webhook_test_send(tenant=tenant_a)


# --- Bad and foreign task payloads -----------------------------------------------


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "12345"])
def test_the_task_drops_a_bad_id_with_a_log_line(tenant_a, bad_id, caplog):
    result = send_webhook.apply(args=[bad_id], headers={"_schema_name": "acme"})

    assert result.successful()
    assert f"{bad_id!r} is not a delivery id." in caplog.text


def test_acmes_delivery_named_in_globexs_schema_sends_nothing(
    tenant_a, tenant_b, receivers, caplog
):
    receiver = _hook(tenant_a, receivers())
    _hook(tenant_b, receiver)
    _, delivery = _run(tenant_a)

    result = send_webhook.apply(args=[str(delivery.public_id)], headers={"_schema_name": "globex"})

    assert result.successful()
    assert f"There is no webhook delivery {delivery.public_id} in this tenant." in caplog.text
    assert receiver.requests == []
    assert (_stored(delivery).status, _stored(delivery).attempts) == ("queued", 0)


# --- Settings -------------------------------------------------------------------


def test_the_first_url_creates_a_secret_and_clearing_the_url_keeps_it(tenant_a):
    changed = webhook_settings_update(tenant=tenant_a, url="https://93.184.215.14/hooks")
    secret = _tenant().webhook_secret

    assert changed == ["webhook_url", "webhook_secret"]
    assert len(secret) >= 40
    assert webhook_settings_update(tenant=tenant_a, url="https://93.184.215.14/hooks") == []
    assert webhook_settings_update(tenant=tenant_a, url="") == ["webhook_url"]
    assert (_tenant().webhook_url, _tenant().webhook_secret) == ("", secret)


def test_a_new_url_clears_the_failing_mark(tenant_a):
    webhook_settings_update(tenant=tenant_a, url="https://93.184.215.14/old")
    Tenant.objects.filter(pk=tenant_a.pk).update(webhook_failing_since=NOW, webhook_failure="x")
    tenant = _tenant()

    webhook_settings_update(tenant=tenant, url="https://93.184.215.14/new")

    assert (_tenant().webhook_failing_since, _tenant().webhook_failure) == (None, "")


@override_settings(SYNC_FETCH_ALLOW_LOOPBACK=False, SYNC_FETCH_ALLOW_PRIVATE=False)
@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://127.0.0.1:8000/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://192.168.0.10/hook",
    ],
)
def test_private_and_loopback_urls_are_refused_and_nothing_is_saved(tenant_a, url):
    with pytest.raises(ValidationError) as caught:
        webhook_settings_update(tenant=tenant_a, url=url)

    [message] = caught.value.message_dict["webhook_url"]
    assert "a private or local address; refused." in message
    assert (_tenant().webhook_url, _tenant().webhook_secret) == ("", "")
    assert tenant_a.webhook_url == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://93.184.215.14/hook", "Enter an http:// or https:// URL."),
        ("javascript:alert(1)", "Enter an http:// or https:// URL."),
        ("http://", "Enter an http:// or https:// URL."),
        ("https://93.184.215.14:99999/", "The port is not a valid number."),
        ("https://93.184.215.14/" + "x" * 500, "Use at most 500 characters."),
    ],
)
def test_urls_that_are_not_http_are_refused(tenant_a, url, message):
    with pytest.raises(ValidationError) as caught:
        webhook_settings_update(tenant=tenant_a, url=url)

    assert caught.value.message_dict == {"webhook_url": [message]}
    assert _tenant().webhook_url == ""


def test_a_url_change_is_audited_with_the_secret_masked(tenant_a):
    webhook_settings_update(tenant=tenant_a, url="https://93.184.215.14/hooks")

    [event] = events("acme", action="tenant.settings_changed")
    assert event.before == {"webhook_url": "", "webhook_secret": "not set"}
    assert event.after == {"webhook_url": "https://93.184.215.14/hooks", "webhook_secret": "set"}
    assert _tenant().webhook_secret not in json.dumps([event.before, event.after])


def test_rotation_makes_a_new_secret_that_old_signatures_fail_and_is_audited_without_it(
    tenant_a, tenant_b, receivers
):
    receiver = _hook(tenant_a, receivers())
    old = tenant_a.webhook_secret
    with schema_context("acme"):
        delivery = webhook_test_send(tenant=tenant_a)
    _send(delivery)
    [before_rotation] = receiver.requests

    new = webhook_secret_rotate(tenant=tenant_a)

    assert new != old and _tenant().webhook_secret == new
    header = before_rotation.headers["X-Webhook-Signature"]
    assert signature_valid(secret=old, body=before_rotation.body, header=header)
    assert not signature_valid(secret=new, body=before_rotation.body, header=header)
    assert webhook_signature(secret=new, body=before_rotation.body) != header
    [public] = events(action="webhook.secret_rotated")
    [own] = events("acme", action="webhook.secret_rotated")
    assert (public.target, public.tenant_slug, own.public_id) == (
        "tenant:acme",
        "acme",
        public.public_id,
    )
    assert (public.before, public.after) == (
        {"webhook_secret": "set"},
        {"webhook_secret": "changed"},
    )
    stored = json.dumps([(e.before, e.after, e.note) for e in events() + events("acme")])
    assert old not in stored and new not in stored
    assert events("globex", action="webhook.secret_rotated") == []
