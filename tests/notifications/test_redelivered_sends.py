"""Tasks are acknowledged when they end, so a worker that dies after sending but before
the acknowledgement leaves its message to be delivered again, with the same task id.
The delivery's status, read under its row lock, keeps that from sending twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django_tenants.utils import schema_context

from notifications.models import DigestDelivery, WebhookDelivery
from notifications.services import digests_dispatch
from notifications.tasks import send_digest, send_webhook
from notifications.webhooks import webhook_settings_update
from scheduling.services import sync_run, user_schedule_update
from tests.notifications.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db

MONDAY_0800_UTC = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)


def _deliver_twice(task, delivery) -> None:
    for _ in range(2):
        result = task.apply(
            args=[str(delivery.public_id)], task_id="t-1", headers={"_schema_name": "acme"}
        )
        assert result.successful()


def test_a_redelivered_digest_send_mails_once(member_a):
    with schema_context("acme"):
        user_schedule_update(
            user=member_a,
            frequency="daily",
            hour=9,
            send_when_empty=True,
            now=MONDAY_0800_UTC - timedelta(days=1),
        )
        digests_dispatch(now=MONDAY_0800_UTC)
        delivery = DigestDelivery.objects.get()

    _deliver_twice(send_digest, delivery)

    assert [message.to for message in mail.outbox] == [["member@acme.test"]]
    with schema_context("acme"):
        delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.task_id) == ("sent", 1, "t-1")


def test_a_redelivered_webhook_send_posts_once(tenant_a):
    with Receiver() as receiver:
        webhook_settings_update(tenant=tenant_a, url=receiver.url)
        with schema_context("acme"):
            run = sync_run(tenant=tenant_a)
            delivery = WebhookDelivery.objects.get(sync_run=run)

        _deliver_twice(send_webhook, delivery)

        assert len(receiver.requests) == 1
    with schema_context("acme"):
        delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.task_id) == ("sent", 1, "t-1")
