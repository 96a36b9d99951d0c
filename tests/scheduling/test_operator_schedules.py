"""The operator's schedule API: registered jobs only, checked before anything is written."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from scheduling.jobs import CLEANUP, HEARTBEAT, SYNC
from scheduling.platform.models import TenantTask
from scheduling.platform.schedules import (
    Clocked,
    Crontab,
    Interval,
    ScheduleNotFound,
    Solar,
    schedule_create,
    schedule_delete,
    schedule_disable,
    schedule_enable,
    schedule_status,
    schedule_update,
)

pytestmark = pytest.mark.django_db

SATURDAY_NOON = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Berlin springs forward that night


def _heartbeat(**overrides) -> PeriodicTask:
    settings = {"name": "ops:heartbeat", "task_name": HEARTBEAT.task_name, "when": Interval(60)}
    return schedule_create(**{**settings, **overrides})


def _ops() -> PeriodicTask:
    return PeriodicTask.objects.get(name="ops:heartbeat")


def _beat_stamp():
    return PeriodicTasks.last_change()


# --- Each kind of `when` ------------------------------------------------------


def test_an_interval_schedule_of_a_platform_job_has_no_tenant_header():
    task = _heartbeat(queue="ops", priority=3, expire_seconds=50, description="alive?")

    assert (task.task, task.interval.every, task.interval.period) == (
        HEARTBEAT.task_name,
        60,
        IntervalSchedule.SECONDS,
    )
    assert json.loads(task.headers) == {}
    assert (task.queue, task.priority, task.expire_seconds, task.description) == (
        "ops",
        3,
        50,
        "alive?",
    )
    assert task.enabled is True and task.one_off is False


def test_it_reuses_the_oldest_of_duplicate_interval_rows():
    oldest = IntervalSchedule.objects.create(every=90, period=IntervalSchedule.SECONDS)
    IntervalSchedule.objects.create(every=90, period=IntervalSchedule.SECONDS)

    assert _heartbeat(when=Interval(90)).interval == oldest


def test_a_tenant_job_carries_its_tenant_header_and_no_tenant_link(tenant_a):
    task = schedule_create(
        name="acme nightly",
        task_name=SYNC.task_name,
        when=Crontab(minute="0", hour="2", day_of_week="mon-fri", timezone="Europe/Berlin"),
        tenant=tenant_a,
    )

    assert json.loads(task.headers) == {"_schema_name": "acme"}
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_week, str(cron.timezone)) == (
        "0",
        "2",
        "mon-fri",
        "Europe/Berlin",
    )
    # The tenant's own link stays on tenant:acme:sync; an operator's extra task has none.
    assert not TenantTask.objects.filter(periodic_task=task).exists()


def test_crontab_rows_are_shared_and_whole_numbers_are_accepted():
    first = _heartbeat(name="a", when=Crontab(minute=15, hour=3))
    second = _heartbeat(name="b", when=Crontab(minute="15", hour="3"))

    assert first.crontab_id == second.crontab_id
    assert CrontabSchedule.objects.filter(minute="15", hour="3").count() == 1


def test_a_solar_schedule_stores_six_decimal_places():
    pytest.importorskip("ephem")

    task = _heartbeat(when=Solar("sunrise", 40.7128, -74.006))
    again = _heartbeat(name="again", when=Solar("sunrise", Decimal("40.712800"), -74.006))

    assert (task.solar.event, task.solar.latitude, task.solar.longitude) == (
        "sunrise",
        Decimal("40.712800"),
        Decimal("-74.006000"),
    )
    assert again.solar_id == task.solar_id
    assert schedule_status(name="ops:heartbeat")["schedule"] == "sunrise at 40.7128, -74.006"


def test_a_solar_schedule_is_refused_without_ephem(monkeypatch):
    # celery's solar schedule imports ephem; a solar row without it stops beat loading any row.
    monkeypatch.setitem(sys.modules, "ephem", None)

    with pytest.raises(ValidationError) as raised:
        _heartbeat(when=Solar("sunrise", 40.7, -74.0))

    assert "ephem" in raised.value.message_dict["when"][0]
    assert not PeriodicTask.objects.exists()


def test_a_clocked_schedule_is_one_off():
    at = timezone.now() + timedelta(hours=1)

    task = _heartbeat(when=Clocked(at))

    assert task.one_off is True and task.clocked.clocked_time == at
    assert ClockedSchedule.objects.count() == 1


# --- Validation ---------------------------------------------------------------

PAST = datetime(2020, 1, 1, tzinfo=UTC)
NAIVE = datetime(2030, 1, 1)  # noqa: DTZ001 - the point of the test


def _sync(tenant, **overrides) -> dict:
    return {
        "name": "x",
        "task_name": SYNC.task_name,
        "when": Interval(60),
        "tenant": tenant,
        **overrides,
    }


def _beat(**overrides) -> dict:
    return {"name": "x", "task_name": HEARTBEAT.task_name, "when": Interval(60), **overrides}


INVALID = [
    (
        "unregistered task",
        lambda t: _beat(task_name="os.system"),
        "task_name",
        "not a registered job",
    ),
    ("empty name", lambda t: _beat(name="  "), "name", "needs a name"),
    ("reserved prefix", lambda t: _beat(name="tenant:acme:extra"), "name", "'tenant:'"),
    ("tenant job, no tenant", lambda t: _sync(None), "tenant", "give a tenant"),
    ("platform job, a tenant", lambda t: _beat(tenant=t), "tenant", "give no tenant"),
    ("not a tenant", lambda t: _sync("acme"), "tenant", "saved Tenant"),
    ("minute 61", lambda t: _beat(when=Crontab(minute="61")), "when", "59"),
    ("step of zero", lambda t: _beat(when=Crontab(minute="*/0")), "when", "crontab"),
    ("two fields in one", lambda t: _beat(when=Crontab(minute="0 3")), "when", "one cron field"),
    ("empty field", lambda t: _beat(when=Crontab(hour="")), "when", "one cron field"),
    ("sunday as 7", lambda t: _beat(when=Crontab(day_of_week="7")), "when", "6"),
    ("step past the range", lambda t: _beat(when=Crontab(hour="*/25")), "when", "hour"),
    (
        "31 february",
        lambda t: _beat(when=Crontab(day_of_month="31", month_of_year="2")),
        "when",
        "never",
    ),
    ("unknown zone", lambda t: _beat(when=Crontab(timezone="Mars/Olympus")), "when", "IANA"),
    ("solar event", lambda t: _beat(when=Solar("lunch", 0, 0)), "when", "sunrise"),
    ("latitude 91", lambda t: _beat(when=Solar("sunrise", 91, 0)), "when", "latitude"),
    (
        "longitude nan",
        lambda t: _beat(when=Solar("sunset", 0, float("nan"))),
        "when",
        "longitude",
    ),
    ("past clocked", lambda t: _beat(when=Clocked(PAST)), "when", "in the future"),
    ("naive clocked", lambda t: _beat(when=Clocked(NAIVE)), "when", "aware"),
    ("zero interval", lambda t: _beat(when=Interval(0)), "when", "at least 1"),
    ("not a schedule", lambda t: _beat(when="every minute"), "when", "Interval, Crontab"),
    ("priority 256", lambda t: _beat(priority=256), "priority", "0 to 255"),
    ("priority -1", lambda t: _beat(priority=-1), "priority", "0 to 255"),
    ("priority bool", lambda t: _beat(priority=True), "priority", "0 to 255"),
    ("args as text", lambda t: _beat(args="[1]"), "args", "must be a list"),
    ("args not json", lambda t: _beat(args=[object()]), "args", "JSON"),
    ("args the job cannot take", lambda t: _beat(args=[1]), "args", "do not fit"),
    ("kwargs the job cannot take", lambda t: _beat(kwargs={"x": 1}), "args", "do not fit"),
    ("kwargs a list", lambda t: _beat(kwargs=[]), "kwargs", "dict"),
    ("kwargs int keys", lambda t: _beat(kwargs={1: 2}), "kwargs", "string keys"),
    ("past expiry", lambda t: _beat(expires=PAST), "expires", "in the future"),
    ("naive expiry", lambda t: _beat(expires=NAIVE), "expires", "aware"),
    (
        "both expiries",
        lambda t: _beat(expires=timezone.now() + timedelta(days=1), expire_seconds=60),
        "expires",
        "not both",
    ),
    ("zero expire_seconds", lambda t: _beat(expire_seconds=0), "expire_seconds", "at least 1"),
    ("queue padded", lambda t: _beat(queue=" ops"), "queue", "queue name"),
]


@pytest.mark.parametrize(
    ("make", "field", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_it_refuses_invalid_input_and_writes_nothing(tenant_a, make, field, fragment):
    tasks_before, stamp = PeriodicTask.objects.count(), _beat_stamp()

    with pytest.raises(ValidationError) as raised:
        schedule_create(**make(tenant_a))

    messages = raised.value.message_dict
    assert list(messages) == [field], messages
    assert fragment in messages[field][0]
    assert PeriodicTask.objects.count() == tasks_before
    assert _beat_stamp() == stamp


def test_a_name_that_is_taken_is_refused():
    _heartbeat()

    with pytest.raises(ValidationError) as raised:
        _heartbeat(when=Interval(30))

    assert raised.value.message_dict == {
        "name": ["A schedule named 'ops:heartbeat' already exists."]
    }
    assert PeriodicTask.objects.get().interval.every == 60


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValidationError) as raised:
        schedule_create(
            name="tenant:x", task_name="nope", when=Interval(-5), priority=999, args="x"
        )

    assert set(raised.value.message_dict) == {"name", "task_name", "when", "priority", "args"}


# --- Update, enable, disable, delete ------------------------------------------


def test_an_update_that_changes_nothing_writes_nothing():
    _heartbeat(queue="ops")
    # The same schedule held as 1 minute in another row, and JSON spaced differently.
    PeriodicTask.objects.filter(name="ops:heartbeat").update(
        interval=IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES),
        args="[ ]",
    )
    before, stamp = PeriodicTask.objects.get().date_changed, _beat_stamp()

    change = schedule_update(name="ops:heartbeat", when=Interval(60), args=[], queue="ops")

    assert change.written is False
    assert PeriodicTask.objects.get().date_changed == before
    assert _beat_stamp() == stamp


def test_an_update_writes_only_what_changed_and_tells_beat():
    _heartbeat()
    stamp = _beat_stamp()

    change = schedule_update(name="ops:heartbeat", when=Crontab(minute="*/5"), priority=9)

    task = PeriodicTask.objects.select_related("crontab").get()
    assert change.describe() == "updated ops:heartbeat (priority, schedule)"
    assert task.interval is None and task.crontab.minute == "*/5" and task.priority == 9
    assert _beat_stamp() > stamp


def test_an_update_is_validated_as_a_whole(tenant_a):
    _heartbeat()

    with pytest.raises(ValidationError) as raised:
        schedule_update(name="ops:heartbeat", tenant=tenant_a)
    with pytest.raises(ValidationError):
        schedule_update(name="ops:heartbeat", task_name=SYNC.task_name)  # a tenant job, no tenant
    with pytest.raises(TypeError):
        schedule_update(name="ops:heartbeat", every=5)

    assert "give no tenant" in raised.value.message_dict["tenant"][0]
    assert _ops().task == HEARTBEAT.task_name


def test_moving_a_job_to_a_tenant_sets_its_header(tenant_a):
    _heartbeat()

    change = schedule_update(name="ops:heartbeat", task_name=SYNC.task_name, tenant=tenant_a)

    assert change.fields == ["headers", "task"]
    assert json.loads(_ops().headers) == {"_schema_name": "acme"}


def test_disable_then_enable():
    _heartbeat()
    PeriodicTask.objects.filter(name="ops:heartbeat").update(last_run_at=timezone.now())

    assert schedule_disable(name="ops:heartbeat").fields == ["enabled"]
    disabled = _ops()
    stamp = _beat_stamp()
    assert schedule_disable(name="ops:heartbeat").written is False
    assert _beat_stamp() == stamp
    assert schedule_enable(name="ops:heartbeat").fields == ["enabled"]

    assert disabled.enabled is False and disabled.last_run_at is None
    assert _ops().enabled is True


def test_a_clocked_schedule_whose_time_passed_cannot_be_enabled_again(time_machine):
    time_machine.move_to(SATURDAY_NOON, tick=False)
    _heartbeat(when=Clocked(SATURDAY_NOON + timedelta(hours=1)))
    schedule_disable(name="ops:heartbeat")
    time_machine.move_to(SATURDAY_NOON + timedelta(hours=2), tick=False)

    with pytest.raises(ValidationError) as raised:
        schedule_enable(name="ops:heartbeat")

    assert "in the future" in raised.value.message_dict["when"][0]
    assert PeriodicTask.objects.get().enabled is False


def test_enabling_an_unregistered_task_is_refused_but_disabling_it_is_not():
    PeriodicTask.objects.create(
        name="legacy",
        task="legacy.thing",
        enabled=False,
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS),
    )

    with pytest.raises(ValidationError) as raised:
        schedule_enable(name="legacy")
    PeriodicTask.objects.update(enabled=True)  # as if enabled in the admin

    assert "not a registered job" in raised.value.message_dict["task_name"][0]
    assert schedule_disable(name="legacy").written is True


def test_delete_removes_the_task_and_tells_beat():
    _heartbeat()
    stamp = _beat_stamp()

    schedule_delete(name="ops:heartbeat")

    assert not PeriodicTask.objects.exists()
    assert _beat_stamp() > stamp


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedule_update(name="missing", priority=1),
        lambda: schedule_enable(name="missing"),
        lambda: schedule_disable(name="missing"),
        lambda: schedule_delete(name="missing"),
        lambda: schedule_status(name="missing"),
    ],
    ids=["update", "enable", "disable", "delete", "status"],
)
def test_an_unknown_name_raises_schedule_not_found(call):
    with pytest.raises(ScheduleNotFound, match="No schedule named 'missing'") as raised:
        call()

    assert isinstance(raised.value, PeriodicTask.DoesNotExist)


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedule_update(name="tenant:acme:sync", priority=1),
        lambda: schedule_enable(name="tenant:acme:sync"),
        lambda: schedule_disable(name="tenant:acme:sync"),
        lambda: schedule_delete(name="tenant:acme:sync"),
    ],
    ids=["update", "enable", "disable", "delete"],
)
def test_the_platforms_own_tenant_tasks_are_refused(tenant_a, call):
    task = PeriodicTask.objects.filter(name="tenant:acme:sync")
    before = task.values("enabled", "priority", "date_changed").get()

    with pytest.raises(ValidationError) as raised:
        call()

    assert "pause or resume the tenant" in raised.value.message_dict["name"][0]
    assert task.values("enabled", "priority", "date_changed").get() == before


# --- Status -------------------------------------------------------------------


def test_status_of_a_tenant_crontab_across_the_dst_change(tenant_a, time_machine):
    time_machine.move_to(SATURDAY_NOON, tick=False)
    schedule_create(
        name="acme nightly",
        task_name=SYNC.task_name,
        tenant=tenant_a,
        when=Crontab(minute="15", hour="3", timezone="Europe/Berlin"),
        priority=5,
    )

    status = schedule_status(name="acme nightly")

    assert status == {
        "name": "acme nightly",
        "task": SYNC.task_name,
        "tenant": "acme",
        "kind": "sync",
        "enabled": True,
        "schedule": "At 03:15 AM Europe/Berlin (15 3 * * *)",
        "last_run_at": None,
        "total_run_count": 0,
        # 03:15 CEST, the first morning of summer time, is 01:15 UTC (02:15 the day before).
        "next_run_at": datetime(2026, 3, 29, 1, 15, tzinfo=UTC),
        "one_off": False,
        "queue": None,
        "priority": 5,
        "expires": None,
        "expire_seconds": None,
    }


def test_an_interval_runs_next_one_period_after_its_last_run_or_now_if_overdue(time_machine):
    time_machine.move_to(SATURDAY_NOON, tick=False)
    _heartbeat()
    PeriodicTask.objects.update(last_run_at=SATURDAY_NOON - timedelta(seconds=20))

    assert schedule_status(name="ops:heartbeat")["next_run_at"] == SATURDAY_NOON + timedelta(
        seconds=40
    )
    time_machine.move_to(SATURDAY_NOON + timedelta(minutes=5), tick=False)
    assert schedule_status(name="ops:heartbeat")["next_run_at"] == SATURDAY_NOON + timedelta(
        minutes=5
    )


def test_a_disabled_or_spent_schedule_has_no_next_run(time_machine):
    time_machine.move_to(SATURDAY_NOON, tick=False)
    at = SATURDAY_NOON + timedelta(hours=3)
    _heartbeat(name="once", when=Clocked(at))
    _heartbeat(name="off", enabled=False)

    assert schedule_status(name="once")["next_run_at"] == at
    assert schedule_status(name="once")["schedule"] == "once at 2026-03-28 15:00:00 UTC"
    assert schedule_status(name="off")["next_run_at"] is None
    PeriodicTask.objects.filter(name="once").update(total_run_count=1)
    assert schedule_status(name="once")["next_run_at"] is None


def test_status_reads_the_platforms_own_tenant_tasks_too(tenant_a):
    status = schedule_status(name="tenant:acme:sync")

    assert (status["tenant"], status["kind"], status["schedule"]) == (
        "acme",
        "sync",
        "every 15 minutes",
    )


def test_a_cleanup_job_may_be_scheduled_with_a_daily_crontab():
    task = schedule_create(name="c", task_name=CLEANUP.task_name, when=Crontab("15", "3"))

    assert schedule_status(name=task.name)["kind"] == "cleanup"


def test_nothing_runs_before_start_time(time_machine):
    # The digest dispatchers set start_time to place each tenant at its own phase.
    time_machine.move_to(SATURDAY_NOON, tick=False)
    _heartbeat()
    _heartbeat(name="cron", when=Crontab(minute="0"))
    start = SATURDAY_NOON + timedelta(minutes=90)
    PeriodicTask.objects.update(start_time=start)

    assert schedule_status(name="ops:heartbeat")["next_run_at"] == start
    assert schedule_status(name="cron")["next_run_at"] == SATURDAY_NOON + timedelta(hours=2)
