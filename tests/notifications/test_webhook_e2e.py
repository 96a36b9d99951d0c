"""End to end: a real worker runs a tenant's sync, which queues the run's webhook; the
loopback receiver answers 500, the worker retries after its backoff, and the second
POST, with the same signed body, is answered 200."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings
from django_tenants.utils import schema_context

from config.celery import app
from notifications.models import WebhookDelivery
from notifications.webhooks import webhook_settings_update
from scheduling.jobs import SYNC
from scheduling.models import SyncRun
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tests.notifications.webhook_receiver import Receiver
from tests.processes import celery_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLUG = "e2e-hook"


@pytest.fixture
def hooked_tenant():
    tenant = tenant_create(name="Hooked", slug=SLUG, admin_email=f"a@{SLUG}.test").tenant
    yield tenant
    tenant_delete(tenant=Tenant.objects.get(schema_name=SLUG))


def _delivery() -> WebhookDelivery | None:
    with schema_context(SLUG):
        return WebhookDelivery.objects.select_related("sync_run").first()


def test_a_worker_retries_a_500_and_the_second_post_is_accepted(hooked_tenant, tmp_path):
    redis.Redis.from_url(settings.REDIS.client).delete("celery")  # no stale messages
    with Receiver(500, 200) as receiver:
        webhook_settings_update(tenant=hooked_tenant, url=receiver.url)
        receiver.secret = hooked_tenant.webhook_secret
        with celery_process(
            "worker",
            tmp_path / "worker.log",
            "--concurrency",
            "1",
            "--without-mingle",
            "--without-gossip",
            env={"NOTIFY_RETRY_BASE": "1"},
        ):
            app.send_task(SYNC.task_name, headers={"_schema_name": SLUG})
            wait_until(
                lambda: (d := _delivery()) is not None and d.status != "queued",
                timeout=45,
                what="the webhook delivery to settle",
            )

    delivery = _delivery()
    assert delivery.sync_run.status == SyncRun.Status.OK
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 2, 200)
    assert delivery.task_id != ""
    first, second = receiver.requests
    assert first.body == second.body
    assert first.signature_valid and second.signature_valid
    body = json.loads(second.body)
    assert body["event"] == "sync_run.finished"
    assert body["run"]["id"] == str(delivery.sync_run.public_id)
    assert body["tenant"] == {"slug": SLUG, "name": "Hooked"}
    tenant = Tenant.objects.get(schema_name=SLUG)
    assert (tenant.webhook_failing_since, tenant.webhook_failure) == (None, "")
