"""The dispatcher's tick (scheduling/dispatch/engine.py) on the real database and Redis.

The dispatcher's clock is injected and moved by each test; the lease is a real
LeaderLease on its own connection, so the tests run in committed transactions. What
the tick publishes is read back from the broker's Redis list, as a worker reads it. A
worker's part (claiming an occurrence, finishing it) is played by the duplicate guard
(scheduling.dispatch.guard), called with the headers of the message read from Redis.

Every test starts with no PeriodicTask, so the tick sees only the test's own rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
import redis
from django.conf import settings
from django.db import connection
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from kombu import Connection

from config.celery import app
from scheduling.dispatch import OCCURRENCE_NAMESPACE, engine, guard
from scheduling.dispatch.engine import Dispatcher
from scheduling.dispatch.lease import LeaderLease, LeaseLost
from scheduling.dispatch.publish import publish_batch
from scheduling.dispatch.timing import jitter_offset
from scheduling.jobs import CLEANUP, SYNC
from scheduling.platform.models import (
    DispatchProgress,
    Occurrence,
    PendingRuns,
    ScheduleChange,
    SchedulerLease,
    ScheduleState,
)
from tests.helpers import ROOT
from tests.processes import celery_env

pytestmark = pytest.mark.django_db(transaction=True)

S = timedelta(seconds=1)
# A broker nothing listens on, tried once: the network to Redis is down.
DEAD_BROKER = "redis://127.0.0.1:1/0"


class Clock:
    """The dispatcher's clock: it stands where the test puts it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(autouse=True, scope="module")
def _tasks_registered():
    app.loader.import_default_modules()  # as a worker does on start: the guard looks tasks up


@pytest.fixture(autouse=True)
def _no_tasks_but_the_tests_own(transactional_db):
    PeriodicTask.objects.all().delete()
    for model in (ScheduleChange, ScheduleState, Occurrence, DispatchProgress, PendingRuns):
        model.objects.all().delete()


@pytest.fixture
def base() -> datetime:
    """A whole minute near the real time: the guard dates a started run by the real clock."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def clock(base) -> Clock:
    return Clock(base - S)


@pytest.fixture
def lease_name() -> str:
    return f"etest-{uuid.uuid4().hex[:8]}"


def _lease(name: str) -> LeaderLease:
    # A long ttl: no renewal comes between a test's steps (one every ttl / 5).
    lease = LeaderLease(name, ttl=600, poll=0.05).start()
    assert lease.is_leader()
    return lease


@pytest.fixture
def lease(lease_name, transactional_db):
    lease = _lease(lease_name)
    yield lease
    lease.stop()


@pytest.fixture
def dispatcher(lease, clock) -> Dispatcher:
    return Dispatcher(lease, clock=clock)


@pytest.fixture
def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS.client)


@pytest.fixture
def queue(broker):
    name = f"etest_{uuid.uuid4().hex[:8]}"
    yield name
    broker.delete(*broker.scan_iter(match=f"{name}*"), f"_kombu.binding.{name}")


# --- Helpers -----------------------------------------------------------------------------


def _interval(seconds: int) -> IntervalSchedule:
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    return interval


def _task(
    name: str,
    *,
    queue: str,
    every: int = 60,
    start: datetime | None = None,
    schema: str = "",
    **fields,
) -> PeriodicTask:
    """An interval task, a tenant's sync when `schema` is given, else a platform cleanup."""
    if "crontab" not in fields:
        fields["interval"] = _interval(every)
    return PeriodicTask.objects.create(
        name=name,
        task=SYNC.task_name if schema else CLEANUP.task_name,
        headers=json.dumps({"_schema_name": schema} if schema else {}),
        start_time=start,
        queue=queue,
        **fields,
    )


def _crontab(minute: str = "*", timezone: str = "UTC") -> CrontabSchedule:
    return CrontabSchedule.objects.create(
        minute=minute,
        hour="*",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=timezone,
    )


def _tick(dispatcher: Dispatcher, clock: Clock, at: datetime) -> engine.TickReport:
    clock.now = at
    return dispatcher.tick()


def _state(task: PeriodicTask) -> ScheduleState:
    return ScheduleState.objects.get(pk=task.pk)


def _policy(task: PeriodicTask, **policy) -> None:
    """Edit the task's policy as the admin does: an update of its state row."""
    assert ScheduleState.objects.filter(pk=task.pk).update(**policy) == 1


def _occurrences(task: PeriodicTask) -> list[tuple[datetime, str, int]]:
    """(slot, status, slots) of the task's occurrences, oldest first."""
    rows = Occurrence.objects.filter(periodic_task_id=task.pk).order_by("slot_at")
    return list(rows.values_list("slot_at", "status", "slots"))


def _key(task: PeriodicTask, slot: datetime) -> str:
    return f"{task.pk}:{slot.astimezone(UTC).isoformat()}"


def _queued(broker: redis.Redis, queue: str) -> list[dict]:
    """The headers of the messages in `queue` (and any priority list of it), oldest first
    (a worker pops from the right); the lists are emptied."""
    messages = []
    for key in sorted(broker.scan_iter(match=f"{queue}*", _type="list")):
        raws = broker.lrange(key, 0, -1)
        broker.delete(key)
        messages += [json.loads(raw)["headers"] for raw in reversed(raws)]
    return messages


def _keys(messages: list[dict]) -> list[str]:
    return [message["occurrence"] for message in messages]


def _broker_lost(monkeypatch) -> None:
    """Cut the dispatcher off the broker (the network beyond this process) until
    `monkeypatch.undo()`: its publishing then fails as on a lost connection."""
    unreachable = Connection(DEAD_BROKER, transport_options={"max_retries": 0})
    monkeypatch.setattr(engine, "publish_batch", partial(publish_batch, connection=unreachable))


def _worker_claims(message: dict) -> guard.Claim:
    """What a worker does on receiving `message`, before the task body: claim it."""
    task = app.tasks[message["task"]]
    task.push_request(headers=message, id=message["id"], hostname="etest-worker")
    try:
        claim = guard.occurrence_claim(task)
    finally:
        task.pop_request()
    assert claim.runs
    return claim


# --- Pickup ------------------------------------------------------------------------------


def test_a_new_task_gets_a_state_row_due_at_its_first_slot(dispatcher, clock, base, queue):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)

    report = _tick(dispatcher, clock, base - S)

    state = _state(task)
    assert report.picked_up == 1 and report.sent == 0
    assert state.active
    assert (state.next_slot_at, state.due_at, state.last_slot_at) == (base, base, None)
    assert not ScheduleChange.objects.exists()


def test_a_new_task_without_a_start_time_runs_one_interval_after_it_was_first_seen(
    dispatcher, clock, base, queue
):
    task = _task("platform:cleanup", queue=queue, every=60)
    seen = ScheduleChange.objects.get(periodic_task_id=task.pk).changed_at

    _tick(dispatcher, clock, base - S)

    state = _state(task)
    whole_second = seen.replace(microsecond=0) + (S if seen.microsecond else timedelta(0))
    assert state.first_seen_at == seen
    assert state.next_slot_at == whole_second + 60 * S


def test_an_interval_change_retimes_the_task_from_now_owing_nothing_before(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base)
    assert _keys(_queued(broker, queue)) == [_key(task, base)]

    task.interval = _interval(45)
    task.save()
    report = _tick(dispatcher, clock, base + 100 * S)

    # The new grid's slots at 45 s and 90 s passed before the change: not owed.
    assert report.picked_up == 1 and report.sent == 0
    assert (_state(task).next_slot_at, _state(task).due_at) == (base + 135 * S, base + 135 * S)
    _tick(dispatcher, clock, base + 135 * S)
    assert _keys(_queued(broker, queue)) == [_key(task, base + 135 * S)]
    assert [status for _, status, _ in _occurrences(task)] == ["sent", "sent"]


def test_disabling_a_task_clears_its_due_time_and_sends_nothing(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)

    task.enabled = False
    task.save()
    report = _tick(dispatcher, clock, base + 120 * S)

    state = _state(task)
    assert report.picked_up == 1 and report.sent == 0
    assert not state.active and (state.next_slot_at, state.due_at) == (None, None)
    assert _queued(broker, queue) == [] and _occurrences(task) == []


def test_a_task_enabled_again_starts_after_now_with_no_catch_up_of_its_pause(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base)
    task.enabled = False
    task.save()
    _tick(dispatcher, clock, base + 30 * S)

    task.enabled = True
    task.save()
    _tick(dispatcher, clock, base + 610 * S)
    assert _state(task).next_slot_at == base + 660 * S
    report = _tick(dispatcher, clock, base + 660 * S)

    assert (report.sent, report.missed) == (1, 0)
    assert _keys(_queued(broker, queue)) == [_key(task, base), _key(task, base + 660 * S)]
    assert _occurrences(task) == [(base, "sent", 1), (base + 660 * S, "sent", 1)]


def test_a_task_enabled_again_owes_nothing_for_its_pause_even_when_the_next_tick_is_late(
    dispatcher, clock, base, broker, queue
):
    """The pause ran from 30 s to 610 s; the scheduler was then down from 610 s to 800 s.
    Owed: the slots of the downtime (660, 720, 780 s), all run here (run_all); never the
    slots of the pause (60 s to 600 s)."""
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(task, run_all=True, overlap="allow_all")
    _tick(dispatcher, clock, base)
    task.enabled = False
    task.save()
    _tick(dispatcher, clock, base + 30 * S)
    task.enabled = True
    task.save()
    _tick(dispatcher, clock, base + 610 * S)
    _queued(broker, queue)

    _tick(dispatcher, clock, base + 800 * S)

    owed = [base + seconds * S for seconds in (660, 720, 780)]
    assert _keys(_queued(broker, queue)) == [_key(task, slot) for slot in owed]


def test_deleting_a_task_drops_its_state_row(dispatcher, clock, base, queue):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    assert ScheduleState.objects.filter(pk=task.pk).exists()

    task.delete()
    report = _tick(dispatcher, clock, base + 60 * S)

    assert report.picked_up == 1 and report.sent == 0
    assert not ScheduleState.objects.exists()


def test_a_bulk_queryset_update_of_many_tasks_is_picked_up_in_bounded_batches(
    dispatcher, clock, base, queue, monkeypatch
):
    monkeypatch.setattr(engine, "PICKUP_BATCH", 50)
    every_minute = _interval(60)
    PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=f"bulk:{number:03d}",
            task=CLEANUP.task_name,
            interval=every_minute,
            start_time=base,
            queue=queue,
        )
        for number in range(120)
    )
    picked = [_tick(dispatcher, clock, base - S).picked_up for _ in range(3)]
    assert picked == [50, 50, 20]
    assert ScheduleState.objects.filter(active=True, due_at=base).count() == 120

    PeriodicTask.objects.filter(name__startswith="bulk:").update(enabled=False)
    picked = [_tick(dispatcher, clock, base - S).picked_up for _ in range(3)]

    assert picked == [50, 50, 20]
    assert ScheduleState.objects.filter(active=False, due_at=None).count() == 120
    assert not ScheduleChange.objects.exists()


def test_editing_an_interval_schedule_retimes_every_task_using_it(dispatcher, clock, base, queue):
    shared = _interval(60)
    users = [_task(f"platform:shared-{n}", queue=queue, every=60, start=base) for n in range(3)]
    other = _task("platform:hourly", queue=queue, every=3600, start=base)
    _tick(dispatcher, clock, base)

    shared.every = 45
    shared.save()
    report = _tick(dispatcher, clock, base + 100 * S)

    assert report.picked_up == 3
    assert [_state(task).next_slot_at for task in users] == [base + 135 * S] * 3
    assert _state(other).next_slot_at == base + 3600 * S


def test_editing_a_crontab_schedule_retimes_every_task_using_it(dispatcher, clock, base, queue):
    shared, own = _crontab("*"), _crontab("*")
    users = [_task(f"platform:cron-{n}", queue=queue, start=base, crontab=shared) for n in range(2)]
    other = _task("platform:own-cron", queue=queue, start=base, crontab=own)
    _tick(dispatcher, clock, base - S)
    assert [_state(task).next_slot_at for task in (*users, other)] == [base] * 3

    shared.minute = str((base.minute + 3) % 60)  # once an hour, three minutes after base
    shared.save()
    report = _tick(dispatcher, clock, base - S)

    assert report.picked_up == 2
    assert [_state(task).next_slot_at for task in users] == [base + 180 * S] * 2
    assert _state(other).next_slot_at == base


def test_a_jitter_policy_change_is_picked_up(dispatcher, clock, base, queue):
    task = _task("platform:cleanup", queue=queue, every=3600, start=base)
    _tick(dispatcher, clock, base - S)
    assert _state(task).due_at == base  # a platform task: no jitter by default
    offset = jitter_offset(task.name, 120)
    assert offset > 0

    _policy(task, jitter=120)
    report = _tick(dispatcher, clock, base - S)

    assert report.picked_up == 1
    assert (_state(task).next_slot_at, _state(task).due_at) == (base, base + offset * S)


def test_bookkeeping_updates_write_no_change_row(dispatcher, clock, base, queue):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    rows = PeriodicTask.objects.filter(pk=task.pk)

    rows.update(last_run_at=base, total_run_count=7, description="ran")
    task.refresh_from_db()
    task.description, task.last_run_at, task.total_run_count = "saved", base + S, 8
    task.save()
    assert not ScheduleChange.objects.exists()

    rows.update(kwargs='{"days": 30}')  # a definition: this one counts
    assert ScheduleChange.objects.filter(periodic_task_id=task.pk).count() == 1


# --- Dispatch ----------------------------------------------------------------------------


def test_a_due_task_is_sent_once_with_its_headers_and_a_task_id_from_its_key(
    dispatcher, clock, base, broker, queue
):
    task = _task("tenant:acme:sync", queue=queue, every=3600, start=base, schema="acme")
    _tick(dispatcher, clock, base - S)
    offset = _state(task).due_at - base
    assert 0 < offset.total_seconds() < 300  # a tenant's task has jitter

    early = _tick(dispatcher, clock, base + offset - S)
    report = _tick(dispatcher, clock, base + offset)

    assert (early.sent, report.sent) == (0, 1)
    (message,) = _queued(broker, queue)
    key = _key(task, base)
    assert message["task"] == SYNC.task_name
    assert message["_schema_name"] == "acme"
    assert message["periodic_task_name"] == "tenant:acme:sync"
    assert message["nominal_time"] == (base + offset).isoformat()
    assert message["occurrence"] == key
    assert message["id"] == str(uuid.uuid5(OCCURRENCE_NAMESPACE, key))
    state = _state(task)
    next_slot = base + 3600 * S
    assert (state.last_slot_at, state.next_slot_at) == (base, next_slot)
    assert state.due_at == next_slot + offset  # the same name, the same bound: the same offset
    occurrence = Occurrence.objects.get(periodic_task_id=task.pk)
    assert (occurrence.status, occurrence.schema_name) == ("sent", "acme")
    assert (occurrence.slot_at, occurrence.due_at) == (base, base + offset)
    assert occurrence.live_until == state.due_at  # it expires when the next one is due
    task.refresh_from_db()  # kept for the admin, as stock beat does, without a change row
    assert (task.last_run_at, task.total_run_count) == (base + offset, 1)
    assert not ScheduleChange.objects.exists()

    again = _tick(dispatcher, clock, base + offset)

    assert again.sent == 0 and _queued(broker, queue) == []
    assert Occurrence.objects.count() == 1


def test_due_rows_are_sent_earliest_due_first_in_bounded_batches(lease, clock, base, broker, queue):
    tasks = {
        seconds: _task(f"platform:due-{seconds}", queue=queue, every=3600, start=base - seconds * S)
        for seconds in (2, 5, 1, 4, 3)
    }
    dispatcher = Dispatcher(lease, clock=clock, dispatch_batch=2, tick_budget=0)

    reports = [_tick(dispatcher, clock, base) for _ in range(3)]

    assert [(r.sent, r.backlog) for r in reports] == [(2, True), (2, True), (1, False)]
    earliest_first = [_key(tasks[s], base - s * S) for s in (5, 4, 3, 2, 1)]
    assert _keys(_queued(broker, queue)) == earliest_first


def _counts(tasks) -> list[tuple[datetime | None, int]]:
    rows = PeriodicTask.objects.filter(pk__in=[t.pk for t in tasks]).order_by("pk")
    return list(rows.values_list("last_run_at", "total_run_count"))


def test_run_counts_are_kept_off_the_send_path_and_folded_exactly_in_bounded_steps(
    lease, clock, base, queue, monkeypatch
):
    tasks = [_task(f"platform:herd-{n}", queue=queue, every=60, start=base) for n in range(5)]
    monkeypatch.setattr(engine, "FOLD_LIMIT", 2)  # two task counts per fold transaction
    dispatcher = Dispatcher(lease, clock=clock, dispatch_batch=2, tick_budget=60)
    _tick(dispatcher, clock, base - S)

    sending = _tick(dispatcher, clock, base)

    # Three batches, one pending row each, in their own transactions; the first fold
    # takes the first row (two counts) and says more are left.
    assert (sending.sent, sending.backlog) == (5, True)
    assert PendingRuns.objects.count() == 2
    assert sorted(count for _, count in _counts(tasks)) == [0, 0, 0, 1, 1]
    while _tick(dispatcher, clock, base + S).backlog:
        pass
    assert not PendingRuns.objects.exists()
    assert _counts(tasks) == [(base, 1)] * 5  # the time sent, one per slot sent

    _tick(dispatcher, clock, base + 60 * S)
    while _tick(dispatcher, clock, base + 61 * S).backlog:
        pass
    assert _counts(tasks) == [(base + 60 * S, 2)] * 5


def test_a_fold_counts_each_send_once_takes_each_tasks_latest_time_and_skips_deleted_tasks(
    dispatcher, lease, base, queue
):
    kept, gone = (_task(f"platform:fold-{n}", queue=queue) for n in range(2))
    PendingRuns.objects.create(task_ids=[kept.pk, gone.pk], runs=[2, 1], sent_at=base + 5 * S)
    # Rows are folded in the order they were written: the later row's time wins even
    # when the clock went back between them.
    PendingRuns.objects.create(task_ids=[kept.pk], runs=[3], sent_at=base)
    gone.delete()

    assert dispatcher._fold_runs(lease.epoch) is False
    assert dispatcher._fold_runs(lease.epoch) is False  # nothing left: nothing counted twice

    assert _counts([kept]) == [(base, 5)]
    assert not PendingRuns.objects.exists()


def test_a_deposed_dispatcher_folds_nothing(dispatcher, lease, lease_name, base, queue):
    task = _task("platform:fold", queue=queue)
    PendingRuns.objects.create(task_ids=[task.pk], runs=[1], sent_at=base)
    epoch = lease.epoch
    SchedulerLease.objects.filter(name=lease_name).update(epoch=epoch + 1)

    with pytest.raises(LeaseLost):
        dispatcher._fold_runs(epoch)

    assert _counts([task]) == [(None, 0)]
    assert PendingRuns.objects.count() == 1


# --- Catch-up ----------------------------------------------------------------------------


def _down_for_three_hours(dispatcher, clock, base, queue, *, run_all: bool, overlap: str):
    """An every-minute task with a ten-minute window sent at base; then beat was down until
    3 h and 30 s later: 180 slots owed, 170 of them older than the window."""
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(task, catchup_window=600, run_all=run_all, overlap=overlap)
    _tick(dispatcher, clock, base)
    return task, _tick(dispatcher, clock, base + (3 * 3600 + 30) * S)


def test_after_downtime_old_slots_are_missed_and_only_the_latest_in_the_window_runs(
    dispatcher, clock, base, broker, queue
):
    task, report = _down_for_three_hours(
        dispatcher, clock, base, queue, run_all=False, overlap="skip"
    )

    assert (report.sent, report.missed) == (1, 179)
    assert _occurrences(task) == [
        (base, "sent", 1),
        (base + 60 * S, "missed", 170),  # older than the window
        (base + 10260 * S, "missed", 9),  # in the window, coalesced into the latest
        (base + 10800 * S, "sent", 1),
    ]
    missed = Occurrence.objects.filter(periodic_task_id=task.pk, status="missed")
    assert [m.last_slot_at for m in missed.order_by("slot_at")] == [
        base + 10200 * S,
        base + 10740 * S,
    ]
    assert _keys(_queued(broker, queue)) == [_key(task, base), _key(task, base + 10800 * S)]
    state = _state(task)
    assert (state.last_slot_at, state.next_slot_at) == (base + 10800 * S, base + 10860 * S)


def test_with_run_all_every_slot_in_the_window_is_sent_oldest_first(
    dispatcher, clock, base, broker, queue
):
    task, report = _down_for_three_hours(
        dispatcher, clock, base, queue, run_all=True, overlap="allow_all"
    )

    in_window = [base + seconds * S for seconds in range(10260, 10801, 60)]
    assert (report.sent, report.missed) == (10, 170)
    assert _occurrences(task) == [
        (base, "sent", 1),
        (base + 60 * S, "missed", 170),
        *[(slot, "sent", 1) for slot in in_window],
    ]
    assert _keys(_queued(broker, queue)) == [_key(task, slot) for slot in [base, *in_window]]


def test_with_run_all_and_the_default_overlap_policy_every_slot_in_the_window_is_sent(
    dispatcher, clock, base, broker, queue
):
    """The slots sent by one catch-up are not one another's "previous run": with skip, the
    oldest was sent and the nine later ones, the latest too, recorded as skipped."""
    task, report = _down_for_three_hours(
        dispatcher, clock, base, queue, run_all=True, overlap="skip"
    )

    in_window = [base + seconds * S for seconds in range(10260, 10801, 60)]
    assert (report.sent, report.skipped) == (10, 0)
    assert _keys(_queued(broker, queue)) == [_key(task, slot) for slot in [base, *in_window]]


# --- Overlap -----------------------------------------------------------------------------


def test_skip_passes_over_a_slot_while_the_previous_message_is_sent_and_unexpired(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base)  # its message expires when the next is due, at 60 s
    _queued(broker, queue)
    task.interval = _interval(10)
    task.save()
    _tick(dispatcher, clock, base + 5 * S)
    assert _state(task).next_slot_at == base + 10 * S

    report = _tick(dispatcher, clock, base + 10 * S)

    assert (report.sent, report.skipped) == (0, 1)
    assert _queued(broker, queue) == []
    assert _occurrences(task) == [(base, "sent", 1), (base + 10 * S, "skipped", 1)]
    assert _state(task).next_slot_at == base + 20 * S


def test_skip_passes_over_slots_while_the_previous_runs_on_a_worker_then_sends_again(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base)
    (message,) = _queued(broker, queue)
    claim = _worker_claims(message)

    running = _tick(dispatcher, clock, base + 60 * S)
    guard.occurrence_finish(claim)
    ended = _tick(dispatcher, clock, base + 120 * S)

    assert (running.sent, running.skipped) == (0, 1)
    assert (ended.sent, ended.skipped) == (1, 0)
    assert _keys(_queued(broker, queue)) == [_key(task, base + 120 * S)]
    assert _occurrences(task) == [
        (base, "finished", 1),
        (base + 60 * S, "skipped", 1),
        (base + 120 * S, "sent", 1),
    ]


def test_buffer_one_holds_one_slot_until_the_previous_ends_and_skips_the_next(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(task, overlap="buffer_one")
    _tick(dispatcher, clock, base)
    (message,) = _queued(broker, queue)
    claim = _worker_claims(message)

    held = _tick(dispatcher, clock, base + 60 * S)
    full = _tick(dispatcher, clock, base + 120 * S)
    still_running = _tick(dispatcher, clock, base + 130 * S)
    assert (held.buffered, full.skipped, still_running.sent) == (1, 1, 0)
    assert _queued(broker, queue) == []
    guard.occurrence_finish(claim)
    released = _tick(dispatcher, clock, base + 131 * S)

    assert released.sent == 1
    (message,) = _queued(broker, queue)
    assert message["occurrence"] == _key(task, base + 60 * S)
    assert message["nominal_time"] == (base + 60 * S).isoformat()
    assert _occurrences(task) == [
        (base, "finished", 1),
        (base + 60 * S, "sent", 1),
        (base + 120 * S, "skipped", 1),
    ]
    released_row = Occurrence.objects.get(periodic_task_id=task.pk, slot_at=base + 60 * S)
    assert released_row.live_until == base + 180 * S  # when the next one is due


def test_a_buffered_slot_of_a_task_disabled_meanwhile_is_never_sent(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(task, overlap="buffer_one")
    _tick(dispatcher, clock, base)
    claim = _worker_claims(*_queued(broker, queue))
    _tick(dispatcher, clock, base + 60 * S)  # buffered
    task.enabled = False  # paused, as schedule_pause does
    task.save()
    _tick(dispatcher, clock, base + 70 * S)

    guard.occurrence_finish(claim)
    report = _tick(dispatcher, clock, base + 80 * S)

    assert report.sent == 0
    assert _queued(broker, queue) == []


def test_allow_all_sends_while_the_previous_runs(dispatcher, clock, base, broker, queue):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(task, overlap="allow_all")
    _tick(dispatcher, clock, base)
    _worker_claims(*_queued(broker, queue))

    report = _tick(dispatcher, clock, base + 60 * S)

    assert (report.sent, report.skipped, report.buffered) == (1, 0, 0)
    assert _keys(_queued(broker, queue)) == [_key(task, base + 60 * S)]
    assert _occurrences(task) == [(base, "started", 1), (base + 60 * S, "sent", 1)]


# --- Jitter ------------------------------------------------------------------------------


def _tenant_tasks(queue: str, *, every: int, start: datetime, count: int = 12) -> list:
    return [
        _task(
            f"tenant:t{number:02d}:every-{every}",
            queue=queue,
            every=every,
            start=start,
            schema=f"t{number:02d}",
        )
        for number in range(count)
    ]


def _offsets(tasks: list[PeriodicTask]) -> list[float]:
    states = [_state(task) for task in tasks]
    return [(state.due_at - state.next_slot_at).total_seconds() for state in states]


def test_tenant_tasks_are_spread_below_the_default_bound_and_a_tenth_of_their_period(
    dispatcher, clock, base, queue
):
    hourly = _tenant_tasks(queue, every=3600, start=base)
    half_minute = _tenant_tasks(queue, every=30, start=base)

    _tick(dispatcher, clock, base - S)

    assert all(0 <= offset < 300 for offset in _offsets(hourly))  # SCHEDULER_TENANT_JITTER
    assert max(_offsets(hourly)) >= 30 and len(set(_offsets(hourly))) >= 6  # spread
    assert all(0 <= offset < 3 for offset in _offsets(half_minute))  # a tenth of 30 s
    assert max(_offsets(half_minute)) > 0


def test_the_default_bound_of_tenant_tasks_is_the_setting(dispatcher, clock, base, queue, settings):
    settings.SCHEDULER_TENANT_JITTER = 10
    hourly = _tenant_tasks(queue, every=3600, start=base)

    _tick(dispatcher, clock, base - S)

    assert all(0 <= offset < 10 for offset in _offsets(hourly)) and max(_offsets(hourly)) > 0


def test_a_platform_task_has_no_jitter_and_a_zero_bound_turns_a_tenants_off(
    dispatcher, clock, base, queue
):
    platform = _task("platform:cleanup", queue=queue, every=3600, start=base)
    tenant = _task("tenant:acme:sync", queue=queue, every=3600, start=base, schema="acme")
    _tick(dispatcher, clock, base - S)
    assert _state(tenant).due_at > base

    _policy(tenant, jitter=0)
    _tick(dispatcher, clock, base - S)

    assert (_state(platform).due_at, _state(tenant).due_at) == (base, base)


def test_another_scheduler_process_gives_every_task_the_same_jitter(
    dispatcher, lease, clock, base, queue
):
    tasks = _tenant_tasks(queue, every=3600, start=base, count=8)
    _tick(dispatcher, clock, base - S)
    here = {task.pk: _state(task).due_at for task in tasks}
    lease.stop()
    ScheduleState.objects.all().delete()  # the index built afresh by the other process
    ScheduleChange.objects.bulk_create(ScheduleChange(periodic_task_id=task.pk) for task in tasks)

    ticker = "tests.scheduling.dispatch.engine_ticker"
    ticked = subprocess.run(
        [sys.executable, "-m", ticker, "--lease", lease.name, "--at", (base - S).isoformat()],
        cwd=ROOT,
        env={**celery_env(), "PYTHONHASHSEED": "1"},  # str hashes differ from this process's
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert ticked.returncode == 0, ticked.stderr
    assert json.loads(ticked.stdout.splitlines()[-1])["picked_up"] == 8
    assert {task.pk: _state(task).due_at for task in tasks} == here
    assert len(set(here.values())) > 1


# --- Recovery and fencing --------------------------------------------------------------


def test_a_new_leader_publishes_again_exactly_what_was_recorded_but_not_confirmed(
    lease, lease_name, clock, base, broker, queue, monkeypatch
):
    tasks = [_task(f"platform:cleanup-{n}", queue=queue, every=60, start=base) for n in (1, 2)]
    crashed = Dispatcher(lease, clock=clock)
    _tick(crashed, clock, base)
    assert len(_queued(broker, queue)) == 2  # published and confirmed
    _broker_lost(monkeypatch)
    lost = _tick(crashed, clock, base + 60 * S)  # recorded, then the publish failed
    assert (lost.sent, lost.unpublished) == (0, 2)
    lease.stop()  # that process is gone
    monkeypatch.undo()

    successor_lease = _lease(lease_name)
    try:
        assert successor_lease.epoch == 2
        report = _tick(Dispatcher(successor_lease, clock=clock), clock, base + 60 * S)
        again = _queued(broker, queue)
        later = _tick(Dispatcher(successor_lease, clock=clock), clock, base + 60 * S)
    finally:
        successor_lease.stop()

    assert (report.republished, report.sent) == (2, 0)
    slot = base + 60 * S
    assert sorted(_keys(again)) == sorted(_key(task, slot) for task in tasks)
    for message in again:
        assert message["id"] == str(uuid.uuid5(OCCURRENCE_NAMESPACE, message["occurrence"]))
        assert message["nominal_time"] == slot.isoformat()
    assert (later.republished, later.sent) == (0, 0) and _queued(broker, queue) == []


def test_a_released_slot_whose_publish_failed_is_published_again(
    dispatcher, clock, base, broker, queue, monkeypatch
):
    """The broker is lost as a buffered slot is released. In the same tick another task's
    slot is skipped, so that tick's dispatch batch has nothing to publish."""
    buffering = _task("platform:buffering", queue=queue, every=60, start=base)
    _task("platform:busy", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    _policy(buffering, overlap="buffer_one")
    _tick(dispatcher, clock, base)
    claims = {m["periodic_task_name"]: _worker_claims(m) for m in _queued(broker, queue)}
    _tick(dispatcher, clock, base + 60 * S)  # buffering's slot is buffered, busy's skipped
    guard.occurrence_finish(claims["platform:buffering"])

    _broker_lost(monkeypatch)
    failed = _tick(dispatcher, clock, base + 120 * S)
    monkeypatch.undo()
    _tick(dispatcher, clock, base + 121 * S)

    assert failed.unpublished == 1
    assert _keys(_queued(broker, queue)) == [_key(buffering, base + 60 * S)]


def test_a_deposed_dispatcher_writes_nothing(
    dispatcher, lease, lease_name, clock, base, broker, queue
):
    due = _task("platform:due", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base - S)
    new = _task("platform:new", queue=queue, every=60, start=base)  # a change to pick up
    # Its renewals stopped getting through, the lease ran out and another process took it;
    # this one has not noticed yet.
    SchedulerLease.objects.filter(name=lease_name).update(
        renewed_at=base - 60 * S, expires_at=base - 60 * S
    )
    successor = _lease(lease_name)
    try:
        assert (lease.epoch, successor.epoch) == (1, 2)

        with pytest.raises(LeaseLost):
            _tick(dispatcher, clock, base)

        assert lease.epoch is None  # it stepped down
        state = _state(due)
        assert (state.next_slot_at, state.due_at, state.last_slot_at) == (base, base, None)
        assert not Occurrence.objects.exists()
        assert not ScheduleState.objects.filter(pk=new.pk).exists()
        assert ScheduleChange.objects.filter(periodic_task_id=new.pk).exists()
        assert _queued(broker, queue) == []
        report = _tick(Dispatcher(successor, clock=clock), clock, base)
    finally:
        successor.stop()
    assert report.sent == 2  # what the deposed one left, the successor sends, once


def test_a_rewound_state_row_never_sends_a_recorded_slot_again(
    dispatcher, clock, base, broker, queue
):
    task = _task("platform:cleanup", queue=queue, every=60, start=base)
    _tick(dispatcher, clock, base)
    guard.occurrence_finish(_worker_claims(*_queued(broker, queue)))

    ScheduleState.objects.filter(pk=task.pk).update(
        next_slot_at=base, due_at=base, last_slot_at=None
    )
    report = _tick(dispatcher, clock, base + S)

    assert report.sent == 0 and _queued(broker, queue) == []
    assert _occurrences(task) == [(base, "finished", 1)]
    assert _state(task).next_slot_at == base + 60 * S


# --- Bad data ----------------------------------------------------------------------------


def _zone_broken(crontab_id: int) -> None:
    """A zone no IANA database has, written past the model's validation."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_celery_beat_crontabschedule SET timezone = 'Mars/Olympus' WHERE id = %s",
            [crontab_id],
        )


def _logged_error_about(caplog, name: str) -> bool:
    return any(r.levelname == "ERROR" and name in r.getMessage() for r in caplog.records)


def test_a_task_with_a_broken_crontab_is_made_inactive_and_the_others_are_sent(
    dispatcher, clock, base, broker, queue, caplog
):
    good = _task("platform:good", queue=queue, every=60, start=base)
    broken = _task("platform:broken", queue=queue, start=base, crontab=_crontab("*"))
    _zone_broken(broken.crontab_id)

    report = _tick(dispatcher, clock, base)

    assert report.sent == 1 and _keys(_queued(broker, queue)) == [_key(good, base)]
    state = _state(broken)
    assert not state.active and (state.next_slot_at, state.due_at) == (None, None)
    assert _logged_error_about(caplog, "platform:broken")


def test_a_crontab_broken_behind_the_schedulers_back_is_made_inactive_when_due(
    dispatcher, clock, base, broker, queue, caplog
):
    good = _task("platform:good", queue=queue, every=60, start=base)
    broken = _task("platform:broken", queue=queue, start=base, crontab=_crontab("*"))
    _tick(dispatcher, clock, base - S)
    assert _state(broken).due_at == base
    _zone_broken(broken.crontab_id)
    ScheduleChange.objects.all().delete()  # as if the zone vanished from the machine's tzdata

    report = _tick(dispatcher, clock, base)

    assert report.sent == 1 and _keys(_queued(broker, queue)) == [_key(good, base)]
    state = _state(broken)
    assert not state.active and state.due_at is None
    assert _occurrences(broken) == []
    assert _logged_error_about(caplog, "platform:broken")


def test_a_task_whose_arguments_are_not_json_does_not_stop_the_others(
    dispatcher, clock, base, broker, queue
):
    good = _task("platform:good", queue=queue, every=60, start=base)
    _task("platform:broken", queue=queue, every=60, start=base, args="[1, 2")

    report = _tick(dispatcher, clock, base)

    assert report.sent == 1
    assert _keys(_queued(broker, queue)) == [_key(good, base)]
