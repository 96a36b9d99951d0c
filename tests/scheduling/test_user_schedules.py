"""UserSchedule: validation in forms and the database, due times, and the tenant's
digest dispatcher kept in step through the signal."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_tenants.utils import schema_context

from scheduling.jobs import DIGEST_DISPATCH
from scheduling.models import UserSchedule
from scheduling.platform.models import TenantTask
from scheduling.platform.services import dispatch_phase, schedules_reconcile
from scheduling.services import user_schedule_update
from tenants.services import tenant_pause, tenant_resume

pytestmark = pytest.mark.django_db

NOON_UTC = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday; CEST and EDT in force


def _dispatcher(slug: str) -> PeriodicTask | None:
    return PeriodicTask.objects.filter(name=f"tenant:{slug}:digests").first()


def _set(user, slug="acme", **fields) -> UserSchedule:
    with schema_context(slug):
        return user_schedule_update(user=user, now=NOON_UTC, **fields)


def test_a_new_schedule_takes_the_tenant_zone_and_stores_the_due_time_in_utc(member_a):
    schedule = _set(member_a, frequency="daily", hour=9)

    assert schedule.timezone == "Europe/Berlin"
    assert schedule.next_due_at == datetime(2026, 6, 11, 7, 0, tzinfo=UTC)  # 09:00 CEST


def test_the_user_zone_overrides_the_tenant_zone(member_a):
    schedule = _set(
        member_a, frequency="weekly", hour=9, weekday=0, timezone_name="America/New_York"
    )

    assert schedule.next_due_at == datetime(2026, 6, 15, 13, 0, tzinfo=UTC)  # Mon 09:00 EDT


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frequency": "weekly", "hour": 9}, "A weekly digest needs a weekday."),
        ({"frequency": "daily"}, "A daily or weekly digest needs an hour."),
        ({"frequency": "daily", "hour": 24}, "less than or equal to 23"),
        ({"frequency": "daily", "hour": -1}, "greater than or equal to 0"),
        ({"frequency": "weekly", "hour": 9, "weekday": 7}, "not a valid choice"),
        ({"frequency": "monthly"}, "not a valid choice"),
        ({"frequency": "daily", "hour": 9, "timezone_name": "Mars/Olympus"}, "IANA time zone"),
    ],
)
def test_validation_rejects_bad_combinations_and_saves_nothing(member_a, fields, message):
    with pytest.raises(ValidationError, match=message), schema_context("acme"):
        user_schedule_update(user=member_a, now=NOON_UTC, **fields)

    with schema_context("acme"):
        assert not UserSchedule.objects.exists()
    assert _dispatcher("acme") is None


@pytest.mark.parametrize(
    "fields",
    [
        {"frequency": "weekly", "hour": 9, "weekday": None},
        {"frequency": "daily", "hour": None},
        {"frequency": "daily", "hour": 24},
        {"frequency": "weekly", "hour": 9, "weekday": 9},
        {"frequency": "monthly", "hour": 9},
        {"frequency": "off", "next_due_at": NOON_UTC},
        {"frequency": "daily", "hour": 9, "enabled": False, "next_due_at": NOON_UTC},
    ],
)
def test_the_database_rejects_bad_combinations_too(member_a, fields):
    with schema_context("acme"), pytest.raises(IntegrityError), transaction.atomic():
        UserSchedule.objects.create(user=member_a, timezone="UTC", **fields)


def test_one_schedule_per_user_and_kind(member_a):
    _set(member_a, frequency="hourly")
    updated = _set(member_a, frequency="daily", hour=7)

    with schema_context("acme"):
        assert UserSchedule.objects.count() == 1
        with pytest.raises(IntegrityError), transaction.atomic():
            UserSchedule.objects.create(user=member_a, timezone="UTC", frequency="hourly")
    assert updated.frequency == "daily"


def test_saving_the_same_rule_keeps_the_due_time(member_a):
    first = _set(member_a, frequency="daily", hour=9)
    with schema_context("acme"):
        again = user_schedule_update(
            user=member_a, frequency="daily", hour=9, now=datetime(2026, 6, 11, 8, tzinfo=UTC)
        )

    assert again.next_due_at == first.next_due_at  # not pushed past a digest that is due


def test_the_first_live_schedule_creates_the_dispatcher_with_the_tenant_header(member_a):
    assert _dispatcher("acme") is None

    _set(member_a, frequency="hourly")

    task = _dispatcher("acme")
    assert task.task == DIGEST_DISPATCH.task_name
    assert json.loads(task.headers) == {"_schema_name": "acme"}
    assert task.enabled is True
    assert task.interval.every == 2  # DIGEST_DISPATCH_INTERVAL in the test settings
    assert TenantTask.objects.get(periodic_task=task).kind == "digests"


def test_the_dispatcher_is_enabled_exactly_while_a_schedule_is_live(admin_a, member_a):
    _set(member_a, frequency="hourly")
    _set(admin_a, frequency="daily", hour=8)

    _set(member_a, frequency="off")
    assert _dispatcher("acme").enabled is True  # the admin's digest is still on

    _set(admin_a, frequency="daily", hour=8, enabled=False)
    assert _dispatcher("acme").enabled is False

    _set(admin_a, frequency="daily", hour=8)
    assert _dispatcher("acme").enabled is True

    with schema_context("acme"):
        UserSchedule.objects.get(user=admin_a).delete()
    assert _dispatcher("acme").enabled is False


def test_a_save_that_keeps_the_dispatcher_as_it_is_writes_nothing(admin_a, member_a):
    _set(member_a, frequency="hourly")
    changed, stamp = _dispatcher("acme").date_changed, PeriodicTasks.last_change()

    _set(admin_a, frequency="daily", hour=8)
    _set(member_a, frequency="daily", hour=6)

    assert _dispatcher("acme").date_changed == changed
    assert PeriodicTasks.last_change() == stamp


def test_pausing_the_tenant_disables_the_dispatcher_and_resuming_restores_it(tenant_a, member_a):
    _set(member_a, frequency="hourly")

    tenant_pause(tenant=tenant_a)
    assert _dispatcher("acme").enabled is False
    tenant_resume(tenant=tenant_a)
    assert _dispatcher("acme").enabled is True


@override_settings(DIGEST_DISPATCH_INTERVAL=300)
def test_each_tenant_starts_at_its_own_deterministic_offset(member_a, outsider_b):
    _set(member_a, frequency="hourly")
    _set(outsider_b, slug="globex", frequency="hourly")

    starts = {slug: _dispatcher(slug).start_time for slug in ("acme", "globex")}
    for slug, start in starts.items():
        assert start.timestamp() % 300 == dispatch_phase(tenant=_tenant(slug), every=300)
    assert len({start.timestamp() % 300 for start in starts.values()}) == 2
    # The same slug gives the same offset in every process: the first 8 bytes of
    # sha256(b"acme") modulo 300, never the per-process hash().
    assert dispatch_phase(tenant=_tenant("acme"), every=300) == 72


def _tenant(slug):
    from tenants.models import Tenant

    return Tenant.objects.get(schema_name=slug)


def test_one_tenants_schedules_never_touch_another_tenants_dispatcher(member_a, outsider_b):
    _set(outsider_b, slug="globex", frequency="hourly")
    _set(member_a, frequency="hourly")
    _set(member_a, frequency="off")

    assert _dispatcher("acme").enabled is False
    assert _dispatcher("globex").enabled is True


def test_reconcile_recreates_a_deleted_dispatcher_and_fixes_a_bulk_edit(member_a, outsider_b):
    _set(member_a, frequency="hourly")
    _set(outsider_b, slug="globex", frequency="hourly")
    _dispatcher("acme").delete()
    PeriodicTask.objects.filter(name="tenant:globex:digests").update(enabled=False)

    changes = schedules_reconcile()

    assert "created tenant:acme:digests" in changes
    assert any(line.startswith("updated tenant:globex:digests") for line in changes)
    assert _dispatcher("acme").enabled and _dispatcher("globex").enabled
    assert schedules_reconcile() == []


def test_a_tenant_whose_only_live_digests_belong_to_inactive_users_has_no_dispatcher_running(
    member_a,
):
    _set(member_a, frequency="hourly")
    with schema_context("acme"):
        member_a.is_active = False
        member_a.save()

    schedules_reconcile()

    assert _dispatcher("acme").enabled is False


def test_reconcile_puts_back_a_hand_edited_dispatcher(member_a):
    from django_celery_beat.models import IntervalSchedule

    _set(member_a, frequency="hourly")
    two_minutes = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.filter(name="tenant:acme:digests").update(
        interval=two_minutes, one_off=True
    )

    changes = schedules_reconcile()

    task = _dispatcher("acme")
    [change] = changes
    assert change.startswith("updated tenant:acme:digests (interval") and "one_off" in change
    assert (task.interval.every, task.interval.period, task.one_off) == (2, "seconds", False)


def test_a_tenant_whose_schema_is_lost_does_not_stop_reconcile_or_its_own_edits(
    tenant_a, member_a, outsider_b
):
    from django.db import connection

    from tenants.provisioning import schema_drop

    _set(member_a, frequency="hourly")
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's open transaction
    schema_drop(schema_name="acme")
    PeriodicTask.objects.filter(name="tenant:globex:sync").update(enabled=False)

    changes = schedules_reconcile()
    tenant_a.name = "Acme, schema lost"
    tenant_a.save()

    assert "updated tenant:acme:digests (enabled)" in changes
    assert "updated tenant:globex:sync (enabled)" in changes
    assert _dispatcher("acme").enabled is False
