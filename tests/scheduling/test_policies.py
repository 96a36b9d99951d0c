"""Per-schedule policies and pause with a note, through the services
(scheduling/platform/policies.py), and what keeps a paused task paused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
import time_machine
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from config.celery import app
from scheduling.audit.models import Action
from scheduling.audit.services import Actor
from scheduling.dispatch.engine import Dispatcher
from scheduling.dispatch.lease import LeaderLease
from scheduling.dispatch.timing import jitter_offset
from scheduling.jobs import CLEANUP
from scheduling.platform.models import Occurrence, ScheduleChange, ScheduleState
from scheduling.platform.policies import (
    CATCHUP_WINDOW_MAX,
    JITTER_MAX,
    PAUSE_NOTE_MAX,
    schedule_pause,
    schedule_pause_get,
    schedule_policy_set,
    schedule_resume,
)
from scheduling.platform.schedules import schedule_status
from scheduling.platform.services import digest_dispatcher_ensure, schedules_reconcile
from scheduling.services import user_schedule_update
from tenants.models import Tenant
from tenants.services import tenant_pause, tenant_resume, tenant_settings_update
from tests.audit.conftest import events

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SCHEDULER_OWNED = ("first_seen_at", "active", "timing", "next_slot_at", "due_at", "last_slot_at")


def _sync_task(slug: str = "acme") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:sync")


def _digests_task(slug: str = "acme") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:digests")


def _scheduled(task: PeriodicTask) -> ScheduleState:
    """The task's state row as the scheduler leaves it after sending a slot."""
    ScheduleState.objects.filter(pk=task.pk).delete()
    return ScheduleState.objects.create(
        periodic_task_id=task.pk,
        first_seen_at=NOW - timedelta(days=3),
        active=True,
        timing="f" * 32,
        next_slot_at=NOW + timedelta(minutes=15),
        due_at=NOW + timedelta(minutes=15, seconds=42),
        last_slot_at=NOW,
    )


def _owned(task: PeriodicTask) -> tuple:
    return ScheduleState.objects.filter(pk=task.pk).values_list(*SCHEDULER_OWNED).get()


def _policy(task: PeriodicTask) -> tuple:
    return (
        ScheduleState.objects.filter(pk=task.pk)
        .values_list("overlap", "catchup_window", "run_all", "jitter")
        .get()
    )


def _enabled(task: PeriodicTask) -> bool:
    return PeriodicTask.objects.values_list("enabled", flat=True).get(pk=task.pk)


def _task_events(task: PeriodicTask, schema: str = "public") -> list:
    return events(schema, action=Action.PERIODIC_TASK_CHANGED, target=task.name)


# --- Policies ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_sets_the_given_policies_and_leaves_the_others(tenant_a):
    task = _sync_task()
    _scheduled(task)

    schedule_policy_set(task, overlap="buffer_one", jitter=30)
    schedule_policy_set(task, catchup_window=timedelta(hours=6), run_all=True)

    assert _policy(task) == ("buffer_one", 6 * 3600, True, 30)


@pytest.mark.django_db
def test_a_policy_edit_leaves_every_column_the_scheduler_owns_untouched(tenant_a):
    task = _sync_task()
    stale = _scheduled(task)
    # The scheduler moves on after the caller read the row.
    advanced = (NOW + timedelta(minutes=30), NOW + timedelta(minutes=30, seconds=42))
    ScheduleState.objects.filter(pk=task.pk).update(
        next_slot_at=advanced[0], due_at=advanced[1], last_slot_at=NOW + timedelta(minutes=15)
    )
    owned = _owned(task)

    schedule_policy_set(task, overlap="allow_all", catchup_window=0, run_all=True, jitter=5)

    assert _owned(task) == owned
    assert owned[3:5] == advanced and stale.due_at != advanced[1]


@pytest.mark.django_db
def test_a_missing_state_row_is_created_with_the_schedulers_defaults(tenant_a, settings):
    settings.SCHEDULER_CATCHUP_WINDOW = 900
    task = _sync_task()
    ScheduleState.objects.filter(pk=task.pk).delete()

    with time_machine.travel(NOW, tick=False):
        schedule_policy_set(task, jitter=12)

    state = ScheduleState.objects.get(pk=task.pk)
    assert (state.first_seen_at, state.active, state.due_at) == (NOW, False, None)
    assert _policy(task) == ("skip", 900, False, 12)


@pytest.mark.django_db
def test_an_existing_rows_first_seen_time_is_kept(tenant_a):
    task = _sync_task()
    _scheduled(task)

    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        schedule_policy_set(task, overlap="allow_all")
        schedule_pause(task, note="maintenance")

    assert _owned(task)[0] == NOW - timedelta(days=3)


@pytest.mark.django_db
def test_the_bounds_themselves_are_accepted(tenant_a):
    task = _sync_task()

    schedule_policy_set(task, catchup_window=CATCHUP_WINDOW_MAX, jitter=JITTER_MAX)
    assert _policy(task)[1::2] == (30 * 24 * 3600, 24 * 3600)
    schedule_policy_set(task, catchup_window=0, jitter=0)
    assert _policy(task)[1::2] == (0, 0)


@pytest.mark.django_db
def test_no_jitter_given_as_none_means_the_default(tenant_a):
    task = _sync_task()
    schedule_policy_set(task, jitter=40)

    schedule_policy_set(task, jitter=None)

    assert _policy(task)[3] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"overlap": "never"}, "overlap", "must be one of skip, buffer_one, allow_all"),
        ({"overlap": None}, "overlap", "must be one of"),
        ({"catchup_window": -1}, "catchup_window", "from 0 to 2592000 seconds, not -1"),
        ({"catchup_window": CATCHUP_WINDOW_MAX + 1}, "catchup_window", "from 0 to 2592000"),
        ({"catchup_window": 1.5}, "catchup_window", "a whole number of seconds"),
        ({"catchup_window": "3600"}, "catchup_window", "a whole number of seconds"),
        ({"catchup_window": True}, "catchup_window", "a whole number of seconds"),
        ({"catchup_window": timedelta(seconds=1.5)}, "catchup_window", "whole seconds"),
        ({"run_all": "yes"}, "run_all", "True or False"),
        ({"jitter": -1}, "jitter", "from 0 to 86400 seconds, not -1"),
        ({"jitter": JITTER_MAX + 1}, "jitter", "from 0 to 86400 seconds"),
    ],
)
def test_a_bad_value_is_refused_with_a_clear_message_and_nothing_is_written(
    tenant_a, values, field, message
):
    task = _sync_task()
    _scheduled(task)
    changes = ScheduleChange.objects.count()

    good = {"jitter": 7} if field == "run_all" else {"run_all": True}  # not written either

    with pytest.raises(ValidationError) as refused:
        schedule_policy_set(task, **(good | values))

    assert list(refused.value.message_dict) == [field]
    assert message in refused.value.message_dict[field][0]
    assert _policy(task) == ("skip", 3600, False, None)
    assert ScheduleChange.objects.count() == changes and _task_events(task) == []


@pytest.mark.django_db
def test_every_bad_value_is_named_at_once(tenant_a):
    with pytest.raises(ValidationError) as refused:
        schedule_policy_set(_sync_task(), overlap="x", catchup_window=-1, run_all=1, jitter="5")

    assert sorted(refused.value.message_dict) == ["catchup_window", "jitter", "overlap", "run_all"]


@pytest.mark.django_db
def test_a_policy_change_is_audited_in_both_trails_and_told_to_the_scheduler(tenant_a, operator):
    task = _sync_task()
    _scheduled(task)
    ScheduleChange.objects.all().delete()

    schedule_policy_set(task, overlap="buffer_one", jitter=30, actor=Actor.for_user(operator))

    [public] = _task_events(task)
    assert (public.before, public.after) == (
        {"overlap": "skip", "jitter": None},
        {"overlap": "buffer_one", "jitter": 30},
    )
    assert (public.actor_kind, public.actor_label, public.tenant_slug) == (
        "operator",
        operator.email,
        "acme",
    )
    [copy] = _task_events(task, "acme")
    assert copy.public_id == public.public_id
    assert list(ScheduleChange.objects.values_list("periodic_task_id", flat=True)) == [task.pk]


@pytest.mark.django_db
def test_setting_the_policies_it_has_writes_nothing(tenant_a):
    task = _sync_task()
    schedule_policy_set(task, overlap="allow_all")
    ScheduleChange.objects.all().delete()
    recorded = len(_task_events(task))

    schedule_policy_set(task, overlap="allow_all", catchup_window=3600)

    assert not ScheduleChange.objects.exists() and len(_task_events(task)) == recorded


@pytest.mark.django_db
def test_a_deleted_task_is_refused(tenant_a):
    task = _sync_task()
    PeriodicTask.objects.filter(pk=task.pk).delete()

    with pytest.raises(ValidationError, match="no longer exists"):
        schedule_policy_set(task, overlap="allow_all")
    with pytest.raises(ValidationError, match="no longer exists"):
        schedule_pause(task, note="gone")

    assert not ScheduleState.objects.filter(pk=task.pk).exists()


# --- Pause with a note -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_pause_disables_the_task_and_keeps_the_note_and_time(tenant_a):
    task = _sync_task()
    state = _scheduled(task)
    owned = _owned(task)

    with time_machine.travel(NOW, tick=False):
        assert schedule_pause(task, note="  The vendor's API is down until Friday.  ") is True

    assert not _enabled(task) and not task.enabled
    assert schedule_pause_get(periodic_task_id=task.pk).note == (
        "The vendor's API is down until Friday."
    )
    assert schedule_pause_get(periodic_task_id=task.pk).since == NOW
    assert _owned(task) == owned and state.due_at is not None


@pytest.mark.django_db
def test_a_pause_is_audited_with_its_note(tenant_a, admin_a):
    task = _sync_task()

    schedule_pause(task, note="vendor outage", actor=Actor.for_user(admin_a, schema_name="acme"))

    for schema in ("public", "acme"):
        [event] = _task_events(task, schema)
        assert (event.before, event.after) == (
            {"enabled": True, "paused": False},
            {"enabled": False, "paused": True},
        )
        assert (event.note, event.actor_label) == ("vendor outage", admin_a.email)


@pytest.mark.django_db
def test_pausing_a_paused_task_changes_nothing(tenant_a):
    task = _sync_task()
    schedule_pause(task, note="first")

    assert schedule_pause(task, note="second") is False

    assert schedule_pause_get(periodic_task_id=task.pk).note == "first"
    assert len(_task_events(task)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("", "Say why the schedule is paused."),
        ("   \n ", "Say why the schedule is paused."),
        (None, "Say why the schedule is paused."),
        ("x" * (PAUSE_NOTE_MAX + 1), "at most 500 characters (it has 501)"),
        ("a\x00b", "NUL"),
    ],
)
def test_a_pause_needs_a_short_note_and_changes_nothing_without_one(tenant_a, note, message):
    task = _sync_task()

    with pytest.raises(ValidationError) as refused:
        schedule_pause(task, note=note)

    assert message in refused.value.message_dict["note"][0]
    assert _enabled(task) and schedule_pause_get(periodic_task_id=task.pk) is None
    assert _task_events(task) == []


@pytest.mark.django_db
def test_a_note_of_the_longest_length_is_kept_whole(tenant_a):
    task = _sync_task()

    schedule_pause(task, note="n" * PAUSE_NOTE_MAX)

    assert schedule_pause_get(periodic_task_id=task.pk).note == "n" * PAUSE_NOTE_MAX
    assert _task_events(task)[0].note == "n" * PAUSE_NOTE_MAX


@pytest.mark.django_db
def test_a_resume_enables_the_task_and_drops_the_note(tenant_a):
    task = _sync_task()
    schedule_pause(task, note="maintenance")

    assert schedule_resume(task) is True

    assert _enabled(task) and task.enabled
    assert ScheduleState.objects.filter(pk=task.pk).values_list(
        "pause_note", "paused_at"
    ).get() == (
        "",
        None,
    )
    assert _task_events(task)[-1].after == {"enabled": True, "paused": False}
    assert schedule_resume(task) is False


@pytest.mark.django_db
def test_a_platform_task_pauses_and_resumes_too(db):
    task = PeriodicTask.objects.create(
        name="platform:cleanup",
        task=CLEANUP.task_name,
        interval=IntervalSchedule.objects.create(every=3600, period="seconds"),
    )

    schedule_pause(task, note="disk full")
    assert not _enabled(task)
    schedule_resume(task)

    assert _enabled(task)
    assert [event.tenant_slug for event in _task_events(task)] == ["", ""]


# --- A paused task stays paused ----------------------------------------------------------------


@pytest.mark.django_db
def test_reconcile_leaves_a_paused_task_disabled_and_its_note_in_place(tenant_a, capsys):
    task = _sync_task()
    schedule_pause(task, note="vendor outage")

    assert schedules_reconcile() == []
    call_command("reconcile_schedules")

    assert capsys.readouterr().out.splitlines() == ["0 change(s)."]
    assert not _enabled(task)
    assert schedule_pause_get(periodic_task_id=task.pk).note == "vendor outage"


@pytest.mark.django_db
def test_reconcile_still_enables_a_task_disabled_by_hand_without_a_pause(tenant_a):
    task = _sync_task()
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)

    assert schedules_reconcile() == ["updated tenant:acme:sync (enabled)"]

    assert _enabled(task)


@pytest.mark.django_db
def test_a_tenant_pause_and_resume_keep_a_paused_schedule_paused(tenant_a):
    task = _sync_task()
    schedule_pause(task, note="vendor outage")

    tenant_pause(tenant=tenant_a)
    tenant_resume(tenant=tenant_a)
    tenant_settings_update(
        tenant=tenant_a,
        source_kind=tenant_a.source_kind,
        source_url=tenant_a.source_url,
        source_token=None,
        sync_interval=timedelta(minutes=5),
        timezone=ZoneInfo("Europe/Berlin"),
    )

    assert not _enabled(task)
    assert schedule_pause_get(periodic_task_id=task.pk).note == "vendor outage"


@pytest.mark.django_db
def test_resuming_the_schedule_of_a_paused_tenant_waits_for_the_tenant(tenant_a):
    task = _sync_task()
    schedule_pause(task, note="vendor outage")
    tenant_pause(tenant=tenant_a)

    assert schedule_resume(task) is True

    assert not _enabled(task) and schedule_pause_get(periodic_task_id=task.pk) is None
    tenant_resume(tenant=Tenant.objects.get(pk=tenant_a.pk))
    assert _enabled(task)


@pytest.mark.django_db
def test_a_paused_digest_dispatcher_stays_off_when_a_user_turns_digests_on(tenant_a, admin_a):
    with schema_context("acme"):
        user_schedule_update(user=admin_a, frequency="daily", hour=9)
    task = _digests_task()
    schedule_pause(task, note="mail provider migration")
    start_time = PeriodicTask.objects.get(pk=task.pk).start_time

    with schema_context("acme"):
        user_schedule_update(user=admin_a, frequency="weekly", hour=9, weekday=0)
    digest_dispatcher_ensure(tenant=tenant_a)

    paused = PeriodicTask.objects.get(pk=task.pk)
    assert (paused.enabled, paused.start_time) == (False, start_time)
    schedule_resume(task)
    assert _enabled(task)  # admin_a still has a digest on


@pytest.mark.django_db
def test_a_note_left_on_a_task_enabled_another_way_is_dropped_and_not_taken_for_a_pause(tenant_a):
    task = _sync_task()
    schedule_pause(task, note="vendor outage")
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=True)  # a bulk enable
    assert schedule_pause_get(periodic_task_id=task.pk) is None

    tenant_pause(tenant=tenant_a)
    tenant_resume(tenant=Tenant.objects.get(pk=tenant_a.pk))

    assert _enabled(task)
    assert not ScheduleState.objects.filter(pk=task.pk, paused_at__isnull=False).exists()


# --- With the real scheduler -----------------------------------------------------------------


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def dispatcher_at(transactional_db):
    """A Dispatcher under a real lease of its own, with a clock the test sets."""
    app.loader.import_default_modules()
    lease = LeaderLease(f"ptest-{uuid.uuid4().hex[:8]}", ttl=600, poll=0.05).start()
    assert lease.is_leader()
    clock = _Clock(datetime.now(UTC))
    dispatcher = Dispatcher(lease, clock=clock)

    def tick(at: datetime):
        clock.now = at
        return dispatcher.tick()

    yield tick
    lease.stop()


@pytest.fixture
def queue():
    name = f"ptest_{uuid.uuid4().hex[:8]}"
    broker = redis.Redis.from_url(settings.REDIS.client)
    yield name
    broker.delete(*broker.scan_iter(match=f"{name}*"), f"_kombu.binding.{name}")


def _sent(queue: str) -> list[str]:
    """The occurrence keys of the messages in `queue`, oldest first; the queue is emptied."""
    broker = redis.Redis.from_url(settings.REDIS.client)
    raws = broker.lrange(queue, 0, -1)
    broker.delete(queue)
    return [json.loads(raw)["headers"]["occurrence"] for raw in reversed(raws)]


def _cleanup_task(queue: str, *, every: int, start: datetime) -> PeriodicTask:
    """The only task: a platform cleanup sent to `queue`, which no worker reads."""
    PeriodicTask.objects.all().delete()
    ScheduleChange.objects.all().delete()
    return PeriodicTask.objects.create(
        name="platform:cleanup",
        task=CLEANUP.task_name,
        interval=IntervalSchedule.objects.get_or_create(every=every, period="seconds")[0],
        start_time=start,
        queue=queue,
    )


def test_the_scheduler_sends_nothing_while_paused_and_owes_nothing_for_the_pause(
    dispatcher_at, queue
):
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    task = _cleanup_task(queue, every=60, start=base)
    dispatcher_at(base)
    assert _sent(queue) == [f"{task.pk}:{base.isoformat()}"]

    schedule_pause(task, note="disk full")
    dispatcher_at(base + timedelta(seconds=1))
    assert ScheduleState.objects.get(pk=task.pk).due_at is None
    dispatcher_at(base + timedelta(minutes=5))
    assert _sent(queue) == []

    schedule_resume(task)
    dispatcher_at(base + timedelta(minutes=5, seconds=10))
    report = dispatcher_at(base + timedelta(minutes=6))

    assert (report.sent, report.missed) == (1, 0)
    assert _sent(queue) == [f"{task.pk}:{(base + timedelta(minutes=6)).isoformat()}"]
    slots = Occurrence.objects.filter(periodic_task_id=task.pk).order_by("slot_at")
    assert list(slots.values_list("status", flat=True)) == ["sent", "sent"]


def test_a_jitter_set_through_the_service_is_the_one_the_scheduler_applies(dispatcher_at, queue):
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    task = _cleanup_task(queue, every=3600, start=base)
    dispatcher_at(base)
    assert ScheduleState.objects.get(pk=task.pk).due_at == base + timedelta(hours=1)  # none

    schedule_policy_set(task, jitter=50)
    dispatcher_at(base + timedelta(seconds=1))

    state = ScheduleState.objects.get(pk=task.pk)
    offset = jitter_offset("platform:cleanup", 50)
    assert offset > 0
    assert state.due_at == base + timedelta(hours=1, seconds=offset)


def test_the_next_run_shown_is_the_schedulers_due_time_jitter_included(
    dispatcher_at, queue, settings
):
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    task = _cleanup_task(queue, every=3600, start=base)
    schedule_policy_set(task, jitter=50)
    offset = timedelta(seconds=jitter_offset("platform:cleanup", 50))
    # Before the scheduler has read the task: the estimate from the definition (overdue).
    assert schedule_status(name="platform:cleanup")["next_run_at"] <= datetime.now(UTC)

    dispatcher_at(base + offset)
    # The row the policy made before the scheduler read the task cost it no slot.
    assert _sent(queue) == [f"{task.pk}:{base.isoformat()}"]

    due = ScheduleState.objects.get(pk=task.pk).due_at
    assert due == base + timedelta(hours=1) + offset
    assert schedule_status(name="platform:cleanup")["next_run_at"] == due
    # Stock beat keeps no due time: the estimate, from when it last ran.
    settings.CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
    last_run = PeriodicTask.objects.get(pk=task.pk).last_run_at
    assert schedule_status(name="platform:cleanup")["next_run_at"] == last_run + timedelta(hours=1)


def test_a_task_the_scheduler_holds_inactive_has_no_next_run(dispatcher_at, queue):
    base = datetime.now(UTC).replace(second=0, microsecond=0)
    task = _cleanup_task(queue, every=60, start=base)
    dispatcher_at(base)
    schedule_pause(task, note="disk full")
    dispatcher_at(base + timedelta(seconds=1))

    assert schedule_status(name="platform:cleanup")["next_run_at"] is None
