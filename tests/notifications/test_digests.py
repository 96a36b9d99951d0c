"""Digests: the dispatcher picks due users, each digest goes out once, and no tenant
ever sees another tenant's users, records or deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import override_settings
from django_tenants.utils import schema_context

from notifications.delivery import DeliveryRetry
from notifications.models import DigestDelivery
from notifications.services import digest_send, digests_dispatch
from notifications.tasks import dispatch_digests, send_digest
from scheduling import metrics
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tests.factories import RecordFactory

pytestmark = pytest.mark.django_db

MONDAY_0800_UTC = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)  # 10:00 in Berlin (CEST)


@pytest.fixture
def digests_on(admin_a, member_a):
    """In acme: the member's daily 09:00 digest is due; the admin's weekly one is not."""
    with schema_context("acme"):
        day_before = MONDAY_0800_UTC - timedelta(days=1)
        user_schedule_update(user=member_a, frequency="daily", hour=9, now=day_before)
        user_schedule_update(
            user=admin_a, frequency="weekly", hour=9, weekday=4, now=MONDAY_0800_UTC
        )
        RecordFactory(external_id="r-new", changed_at=MONDAY_0800_UTC - timedelta(hours=3))
        RecordFactory(
            external_id="r-updated",
            changed_at=MONDAY_0800_UTC - timedelta(hours=2),
            first_seen_at=MONDAY_0800_UTC - timedelta(days=30),
        )
        RecordFactory(external_id="r-old", changed_at=MONDAY_0800_UTC - timedelta(days=3))


def _dispatch(django_capture_on_commit_callbacks, slug="acme", now=MONDAY_0800_UTC):
    with schema_context(slug), django_capture_on_commit_callbacks() as queued:
        count = digests_dispatch(now=now)
    assert len(queued) == count  # one send_task per queued digest, only after commit
    return count


def test_the_dispatcher_queues_only_the_users_whose_digest_is_due(
    digests_on, member_a, django_capture_on_commit_callbacks
):
    assert _dispatch(django_capture_on_commit_callbacks) == 1

    with schema_context("acme"):
        delivery = DigestDelivery.objects.get()
        schedule = UserSchedule.objects.get(user=member_a)
    assert delivery.user_id == member_a.pk
    assert delivery.period == datetime(2026, 6, 8, 7, 0, tzinfo=UTC)  # Monday 09:00 CEST
    assert delivery.status == "queued"
    assert schedule.next_due_at == datetime(2026, 6, 9, 7, 0, tzinfo=UTC)  # on to Tuesday


def test_a_second_dispatch_queues_nothing_twice(digests_on, django_capture_on_commit_callbacks):
    assert _dispatch(django_capture_on_commit_callbacks) == 1
    assert _dispatch(django_capture_on_commit_callbacks) == 0

    with schema_context("acme"):
        assert DigestDelivery.objects.count() == 1


def test_the_digest_lists_the_changes_of_its_period_once(
    digests_on, member_a, django_capture_on_commit_callbacks
):
    _dispatch(django_capture_on_commit_callbacks)
    with schema_context("acme"):
        delivery = DigestDelivery.objects.get()
        sent = digest_send(delivery_id=str(delivery.public_id), task_id="t-1")
        again = digest_send(delivery_id=str(delivery.public_id), task_id="t-2")  # a retry

    assert (sent.status, sent.record_count, again.task_id) == ("sent", 2, "t-1")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["member@acme.test"]
    assert message.subject == "Acme Corp daily digest, Mon 8 Jun: 1 new, 1 updated"
    assert "- Record r-new\n  New Mon 8 Jun, 07:00\n" in message.body
    assert "- Record r-updated\n  Updated Mon 8 Jun, 08:00\n" in message.body
    assert "https://example.test/r-new" in message.body
    assert "r-old" not in message.body
    assert "every day at 09:00 (Europe/Berlin)" in message.body
    assert "http://acme.localhost/" in message.body
    with schema_context("acme"):
        assert UserSchedule.objects.get(user=member_a).last_sent_at == sent.sent_at


def test_the_next_digest_starts_where_the_last_one_ended(
    digests_on, django_capture_on_commit_callbacks
):
    _dispatch(django_capture_on_commit_callbacks)
    tuesday = MONDAY_0800_UTC + timedelta(days=1)
    with schema_context("acme"):
        first = DigestDelivery.objects.get()
        digest_send(delivery_id=str(first.public_id))
        RecordFactory(external_id="r-tuesday", changed_at=tuesday - timedelta(hours=1))
    _dispatch(django_capture_on_commit_callbacks, now=tuesday)
    with schema_context("acme"):
        second = DigestDelivery.objects.order_by("period").last()
        digest_send(delivery_id=str(second.public_id))

    assert second.since == first.until
    assert [m.subject for m in mail.outbox] == [
        "Acme Corp daily digest, Mon 8 Jun: 1 new, 1 updated",
        "Acme Corp daily digest, Tue 9 Jun: 1 new, 0 updated",
    ]


def test_a_period_with_no_changes_sends_no_email(member_a, django_capture_on_commit_callbacks):
    with schema_context("acme"):
        user_schedule_update(user=member_a, frequency="hourly", now=MONDAY_0800_UTC)
    _dispatch(django_capture_on_commit_callbacks, now=MONDAY_0800_UTC + timedelta(hours=1))
    with schema_context("acme"):
        delivery = digest_send(delivery_id=str(DigestDelivery.objects.get().public_id))

    assert delivery.status == "skipped"
    assert mail.outbox == []


def test_an_inactive_user_gets_nothing_and_moves_on(
    digests_on, member_a, django_capture_on_commit_callbacks
):
    with schema_context("acme"):
        member_a.is_active = False
        member_a.save()

    assert _dispatch(django_capture_on_commit_callbacks) == 0
    with schema_context("acme"):
        assert not DigestDelivery.objects.exists()
        assert UserSchedule.objects.get(user=member_a).next_due_at > MONDAY_0800_UTC


@override_settings(EMAIL_BACKEND="tests.notifications.backends.BrokenBackend")
def test_a_failing_mail_server_keeps_the_digest_pending_then_fails_it(
    digests_on, django_capture_on_commit_callbacks
):
    _dispatch(django_capture_on_commit_callbacks)
    with schema_context("acme"):
        key = str(DigestDelivery.objects.get().public_id)
        with pytest.raises(DeliveryRetry, match="could not be reached"):
            digest_send(delivery_id=key, final=False)
        pending = DigestDelivery.objects.get()
        failed = digest_send(delivery_id=key, final=True)

    assert (pending.status, pending.attempts) == ("queued", 1)
    assert "connection refused by test backend" in pending.last_error
    assert (failed.status, failed.attempts) == ("failed", 2)


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "00000000-0000-0000-0000-000000000000"])
def test_a_bad_delivery_id_is_a_clear_error(tenant_a, bad):
    with schema_context("acme"), pytest.raises(ValidationError):
        digest_send(delivery_id=bad)


def test_the_send_task_drops_a_bad_payload_without_retrying(tenant_a, caplog):
    result = send_digest.apply(args=["not-a-uuid"], headers={"_schema_name": "acme"})

    assert result.successful()
    assert "'not-a-uuid' is not a delivery id." in caplog.text
    assert mail.outbox == []


def test_a_delivery_id_from_another_tenant_sends_nothing(
    digests_on, outsider_b, django_capture_on_commit_callbacks, caplog
):
    _dispatch(django_capture_on_commit_callbacks)
    with schema_context("acme"):
        acme_delivery = DigestDelivery.objects.get()

    send_digest.apply(args=[str(acme_delivery.public_id)], headers={"_schema_name": "globex"})

    assert mail.outbox == []
    assert "There is no digest delivery" in caplog.text
    with schema_context("acme"):
        assert DigestDelivery.objects.get().status == "queued"


def test_the_tasks_run_in_the_tenant_named_by_the_header(
    digests_on, outsider_b, django_capture_on_commit_callbacks, time_machine
):
    time_machine.move_to(MONDAY_0800_UTC)
    with schema_context("globex"):
        user_schedule_update(
            user=outsider_b,
            frequency="daily",
            hour=9,
            timezone_name="UTC",
            now=MONDAY_0800_UTC - timedelta(days=1),
        )
        RecordFactory(external_id="g-1", changed_at=MONDAY_0800_UTC - timedelta(hours=1))

    with django_capture_on_commit_callbacks() as queued:
        dispatch_digests.apply(headers={"_schema_name": "globex"})
    with schema_context("globex"):
        delivery = DigestDelivery.objects.get()
        send_digest.apply(args=[str(delivery.public_id)], headers={"_schema_name": "globex"})

    assert len(queued) == 1
    assert [m.to for m in mail.outbox] == [["outsider@globex.test"]]
    assert "g-1" in mail.outbox[0].body and "r-new" not in mail.outbox[0].body
    with schema_context("acme"):
        assert not DigestDelivery.objects.exists()  # acme's due member was not touched


def test_the_tasks_refuse_to_run_without_a_tenant(digests_on):
    before = metrics.refused_task_count()

    dispatch_digests.apply()  # from public: no tenant
    send_digest.apply(args=["x"], headers={"_schema_name": "no-such-tenant"})

    assert metrics.refused_task_count() == before + 2
    with schema_context("acme"):
        assert not DigestDelivery.objects.exists()


def test_a_delivery_whose_message_was_lost_is_queued_again_then_failed(
    digests_on, django_capture_on_commit_callbacks
):
    _dispatch(django_capture_on_commit_callbacks)  # queued, but no worker ever ran it

    with schema_context("acme"), django_capture_on_commit_callbacks() as soon:
        digests_dispatch(now=MONDAY_0800_UTC + timedelta(minutes=1))
    with schema_context("acme"), django_capture_on_commit_callbacks() as later:
        DigestDelivery.objects.update(created_at=MONDAY_0800_UTC, updated_at=MONDAY_0800_UTC)
        # Longer than the longest retry countdown (NOTIFY_RETRY_MAX) plus ten minutes.
        digests_dispatch(now=MONDAY_0800_UTC + timedelta(seconds=3600, minutes=11))
    with schema_context("acme"):
        digests_dispatch(now=MONDAY_0800_UTC + timedelta(days=1, minutes=1))
        given_up = DigestDelivery.objects.get(period__lt=MONDAY_0800_UTC)

    assert (len(soon), len(later)) == (0, 1)  # too fresh to resend, then resent once
    assert (given_up.status, given_up.last_error) == (
        "failed",
        "Never sent: the send task did not run.",
    )


def test_a_window_stops_at_the_start_of_a_sync_still_running(
    digests_on, django_capture_on_commit_callbacks
):
    from scheduling.models import SyncRun

    started = MONDAY_0800_UTC - timedelta(minutes=2)
    with schema_context("acme"):
        SyncRun.objects.create(started_at=started)  # running: its records may not be committed
        SyncRun.objects.create(started_at=MONDAY_0800_UTC - timedelta(hours=5))  # long dead
    _dispatch(django_capture_on_commit_callbacks)

    with schema_context("acme"):
        assert DigestDelivery.objects.get().until == started
