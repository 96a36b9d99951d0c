"""The nightly cleanup also deletes old deliveries: each tenant's webhook deliveries and
digests, and their public DeliveryLog copies, after RUN_HISTORY_DAYS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from notifications.delivery import delivery_save
from notifications.models import DeliveryStatus, DigestDelivery, WebhookDelivery
from notifications.platform.models import DeliveryLog
from scheduling.models import SyncRun
from scheduling.platform.maintenance import run_history_cleanup
from scheduling.platform.tasks import cleanup_runs

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOOK = "https://hooks.example.com/in"


def _days_ago(time_machine, days: int) -> datetime:
    """Move the clock there, so the rows made next are created then."""
    moment = NOW - timedelta(days=days)
    time_machine.move_to(moment, tick=False)
    return moment


def _webhook(schema: str, *, with_run: bool = False) -> WebhookDelivery:
    """A webhook delivery (a test POST, or a sync run's summary) made now, with its copy."""
    with schema_context(schema):
        run = None
        if with_run:
            now = datetime.now(UTC)
            run = SyncRun.objects.create(started_at=now, finished_at=now, status="ok")
        delivery = WebhookDelivery(
            kind=WebhookDelivery.Kind.RUN if run else WebhookDelivery.Kind.TEST,
            sync_run=run,
            recipient=HOOK,
            payload={"ok": True},
        )
        delivery_save(delivery)
    return delivery


def _digest(user, schema: str) -> DigestDelivery:
    """A sent digest for the period that is due now, made now, with its copy."""
    now = datetime.now(UTC)
    with schema_context(schema):
        delivery = DigestDelivery(
            user=user,
            period=now,
            since=now - timedelta(days=1),
            until=now,
            recipient=user.email,
            status=DeliveryStatus.SENT,
            sent_at=now,
        )
        delivery_save(delivery)
    return delivery


def _kept(schema: str) -> set:
    with schema_context(schema):
        return {
            *WebhookDelivery.objects.values_list("public_id", flat=True),
            *DigestDelivery.objects.values_list("public_id", flat=True),
        }


def _logged(schema: str) -> set:
    logs = DeliveryLog.objects.filter(tenant__schema_name=schema)
    return set(logs.values_list("delivery_public_id", flat=True))


@override_settings(RUN_HISTORY_DAYS=30)
def test_cleanup_deletes_old_deliveries_and_their_public_copies_in_every_tenant(
    tenant_a, tenant_b, member_a, outsider_b, time_machine
):
    _days_ago(time_machine, 45)
    old_test = _webhook("acme")
    old_run = _webhook("acme", with_run=True)
    old_digest = _digest(member_a, "acme")
    theirs = _webhook("globex")
    _days_ago(time_machine, 29)
    recent = [_webhook("acme"), _webhook("acme", with_run=True), _digest(member_a, "acme")]
    their_recent = _digest(outsider_b, "globex")
    _days_ago(time_machine, 0)

    deleted = cleanup_runs.apply().get()

    # acme: 2 webhooks, 1 run, 1 digest and 3 copies; globex: 1 webhook and its copy.
    assert deleted == {"acme": 7, "globex": 2}
    kept = {delivery.public_id for delivery in recent}
    assert _kept("acme") == _logged("acme") == kept
    assert _kept("globex") == _logged("globex") == {their_recent.public_id}
    gone = {old_test.public_id, old_run.public_id, old_digest.public_id, theirs.public_id}
    assert not DeliveryLog.objects.filter(delivery_public_id__in=gone).exists()
    with schema_context("acme"):
        assert SyncRun.objects.count() == 1


def test_a_delivery_made_exactly_at_the_cutoff_is_kept(tenant_a, member_a, time_machine):
    _days_ago(time_machine, 7)
    webhook = _webhook("acme")
    digest = _digest(member_a, "acme")

    assert run_history_cleanup(older_than=timedelta(days=7), now=NOW) == {"acme": 0}
    assert _kept("acme") == _logged("acme") == {webhook.public_id, digest.public_id}
    # 2 deliveries and their 2 copies.
    assert run_history_cleanup(older_than=timedelta(days=6), now=NOW) == {"acme": 4}
    assert _kept("acme") == _logged("acme") == set()
