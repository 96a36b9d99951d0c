"""The dispatcher: what the leading beat process does on each tick.

State lives in three public tables (scheduling.platform.models):
  ScheduleState   one row per PeriodicTask: its next slot, when that is due (`due_at`,
                  the slot plus the jitter, indexed), the last slot dealt with, and
                  the policies (overlap, catch-up window, run all, jitter, pause note);
  ScheduleChange  what changed since the last pickup, written by triggers;
  Occurrence      one row per slot (or run of missed slots) and its outcome.

A tick, under the leader lease (scheduling.dispatch.lease), runs these steps, each
in its own fenced transaction, so a deposed leader's writes roll back:

1. recover   once per tenure: publish again what an earlier tenure recorded as sent
             after the last batch it confirmed (the worker runs a copy once: the task
             id comes from the occurrence key);
2. pickup    read up to PICKUP_BATCH changes, oldest first; refresh their state rows
             (create, re-time, drop) and delete those changes;
3. release   buffered occurrences whose previous occurrence has ended are sent;
4. dispatch  read the state rows due by now, ordered by due time, DISPATCH_BATCH at a
             time; for each, sort its slots into run, missed and coalesced by its
             catch-up policy, apply its overlap policy, record one occurrence per
             slot (missed ones as one row per run), count the sent ones (a PendingRuns
             row) and advance the row; commit; then publish the sent ones in one
             pipelined batch and confirm the batch. The publishing runs in a thread
             while the next batch is read, planned and recorded;
5. count     when idle (and every FOLD_EVERY seconds of a herd): add the oldest
             PendingRuns rows to PeriodicTask.last_run_at and total_run_count.

Nothing in memory grows with the number of schedules: every step reads a bounded
batch through an index. A tick ends after TICK_BUDGET seconds of dispatching so a
change is picked up within a second even while a herd is sent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from django.conf import settings
from django.db import connection

from scheduling.dispatch import timing
from scheduling.dispatch.definitions import (
    COLUMNS,
    JOINS,
    WIDTH,
    Definition,
    definitions_load,
    fingerprint,
    jitter_bound,
    jitter_for,
    spec_of,
)
from scheduling.dispatch.lease import LeaderLease
from scheduling.dispatch.publish import (
    Outgoing,
    PublishReport,
    outgoing_build,
    outgoing_check,
    publish_batch,
    stop_requested,
)
from scheduling.jobs import job_for_task

logger = logging.getLogger(__name__)
# One line per message sent, as stock beat writes ("Sending due task ..."), one record per
# batch. Raise this logger's level to WARNING to drop them at scale.
sent_logger = logging.getLogger("scheduling.dispatch.sent")

STATE = "public.scheduling_platform_schedulestate"
CHANGE = "public.scheduling_platform_schedulechange"
OCCURRENCE = "public.scheduling_platform_occurrence"
PROGRESS = "public.scheduling_platform_dispatchprogress"
TASK = "public.django_celery_beat_periodictask"
PENDING = "public.scheduling_platform_pendingruns"

DISPATCH_BATCH = 1000  # state rows per transaction and publish: a message waits for its batch
PICKUP_BATCH = 5000  # changes per transaction
RELEASE_BATCH = 1000  # buffered occurrences per tick
RECOVER_BATCH = 20000  # occurrences published again per step, after a takeover
TICK_BUDGET = 0.5  # seconds of dispatching before the tick lets pickup run again
RUN_ALL_LIMIT = 100  # slots one schedule may run in one tick with run_all
BATCH_BITS = 32  # a batch number is epoch << BATCH_BITS | the tenure's counter
# The GIL switch interval while a batch publishes in a thread beside the dispatching: the
# main thread, its database reply in, waits for the GIL up to this long, once per round trip
# (five per batch); Python's default 5 ms more than doubled a herd's time.
SWITCH_INTERVAL = 0.0005
FOLD_LIMIT = 5000  # task counts added to PeriodicTask rows per fold transaction
FOLD_EVERY = 5.0  # seconds: a herd longer than this still has its counts folded meanwhile
# The timing of a state row whose task can't be scheduled. An empty timing is a row
# this scheduler has not read yet (made by the policy services).
UNSCHEDULABLE = "unschedulable"
UNFINISHED_GRACE = timedelta(seconds=30)  # after a started task's hard time limit
ONE_MICROSECOND = timedelta(microseconds=1)

_STATE_COLUMNS = """
    s.first_seen_at, s.active, s.timing, s.next_slot_at, s.due_at, s.last_slot_at,
    s.overlap, s.catchup_window, s.run_all, s.jitter
"""


@dataclass(slots=True)
class State:
    first_seen_at: datetime
    active: bool
    timing: str
    next_slot_at: datetime | None
    due_at: datetime | None
    last_slot_at: datetime | None
    overlap: str
    catchup_window: int
    run_all: bool
    jitter: int | None

    @classmethod
    def from_row(cls, row: Sequence) -> State:
        return cls(*row)


@dataclass(slots=True)
class Record:
    """One occurrence row to insert."""

    definition: Definition
    slot_at: datetime
    due_at: datetime
    status: str
    slots: int = 1
    last_slot_at: datetime | None = None
    live_until: datetime | None = None

    def message(self) -> Outgoing:
        """The message of a sent record (checked by outgoing_check when planned)."""
        return outgoing_build(
            periodic_task=self.definition,
            nominal_at=self.slot_at,
            due_at=self.due_at,
            expires=self.live_until,
        )


@dataclass
class TickReport:
    """What one tick did, for logs and the benchmark."""

    picked_up: int = 0
    sent: int = 0
    skipped: int = 0
    missed: int = 0
    buffered: int = 0
    republished: int = 0
    unpublished: int = 0
    backlog: bool = False
    errors: list[str] = field(default_factory=list)


class Dispatcher:
    """The tick of the project's beat scheduler; see the module docstring.

    `clock` returns the aware current time (time-machine moves it in tests); `lease`
    decides whether this process may act.
    """

    def __init__(
        self,
        lease: LeaderLease,
        *,
        clock: Callable[[], datetime] | None = None,
        dispatch_batch: int = DISPATCH_BATCH,
        tick_budget: float = TICK_BUDGET,
    ) -> None:
        self.lease = lease
        self.clock = clock or (lambda: datetime.now(UTC))
        self.dispatch_batch = dispatch_batch
        self.tick_budget = tick_budget
        self._recovered_epoch: int | None = None
        self._batches = 0
        self._folded_at = time.monotonic()
        self._tenant_jitter: int | None = None  # the setting, read once per dispatch batch
        self._executor: ThreadPoolExecutor | None = None
        self._publishing: tuple[int, Future] | None = None  # (batch, its publishing)

    # --- The tick ------------------------------------------------------------------

    def tick(self) -> TickReport:
        report = TickReport()
        epoch = self.lease.epoch
        if epoch is None:
            return report
        if self._recovered_epoch != epoch:
            self._recover(epoch, report)
            if report.unpublished:
                return report
            self._recovered_epoch = epoch
        self._pickup(epoch, report)
        self._release(epoch, report)
        if report.unpublished:  # publish those again before confirming any later batch
            self._recovered_epoch = None
            return report
        started = time.monotonic()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL))
        try:
            while not stop_requested():
                full = self._dispatch(epoch, report)
                if report.unpublished:  # the broker failed: publish those again first
                    break
                if not full:
                    break
                if time.monotonic() - started > self.tick_budget:
                    report.backlog = True
                    break
        finally:
            try:
                self._published(report)  # the last batch's publishing ends within the tick
            finally:
                sys.setswitchinterval(switch_interval)
        if report.unpublished:
            self._recovered_epoch = None
        fold_due = not report.backlog or time.monotonic() - self._folded_at > FOLD_EVERY
        if not report.unpublished and fold_due and self._fold_runs(epoch):
            report.backlog = True  # more runs to fold: tick again at once
        return report

    def close(self) -> None:
        """Stop the publishing thread (a tick leaves nothing in it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def next_due_in(self, now: datetime | None = None) -> float | None:
        """Seconds until the earliest due time (0 when overdue); None when nothing is due."""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT min(due_at) FROM {STATE} WHERE due_at IS NOT NULL")
            (due,) = cursor.fetchone()
        if due is None:
            return None
        return max((due - (now or self.clock())).total_seconds(), 0.0)

    # --- 1. Recover ------------------------------------------------------------------

    def _recover(self, epoch: int, report: TickReport) -> None:
        """Publish again what was recorded as sent after the last confirmed batch."""
        while True:
            with self.lease.fenced(epoch), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {PROGRESS} (name, published_batch) VALUES (%s, 0) "
                    f"ON CONFLICT (name) DO NOTHING",
                    [self.lease.name],
                )
                cursor.execute(
                    f"SELECT published_batch FROM {PROGRESS} WHERE name = %s", [self.lease.name]
                )
                (confirmed,) = cursor.fetchone()
                cursor.execute(
                    f"SELECT o.batch, o.slot_at, o.due_at, o.live_until, {COLUMNS} "
                    f"FROM {OCCURRENCE} o "
                    + JOINS.format(task_id="o.periodic_task_id")
                    + """
                    WHERE o.status = 'sent' AND o.batch > %s
                    ORDER BY o.batch, o.id LIMIT %s""",
                    [confirmed, RECOVER_BATCH],
                )
                rows = cursor.fetchall()
            if not rows:
                return
            messages = []
            for row in rows:
                definition = Definition.from_row(row[4:])
                try:
                    messages.append(
                        outgoing_build(
                            periodic_task=definition,
                            nominal_at=row[1],
                            due_at=row[2],
                            expires=row[3],
                        )
                    )
                except ValueError as error:
                    logger.error("Periodic task %s can't be sent: %s", definition.name, error)
            logger.warning(
                "Publishing again %s occurrences recorded after batch %s", len(rows), confirmed
            )
            result = publish_batch(messages, finish_on_stop=True)
            report.republished += len(result.published)
            if not result.complete:
                report.unpublished += len(messages) - len(result.published)
                return
            last = max(row[0] for row in rows)
            self._confirm(last)
            if len(rows) < RECOVER_BATCH:
                return

    def _confirm(self, batch: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {PROGRESS} SET published_batch = GREATEST(published_batch, %s) "
                f"WHERE name = %s",
                [batch, self.lease.name],
            )

    # --- 2. Pickup -------------------------------------------------------------------

    def _pickup(self, epoch: int, report: TickReport) -> None:
        now = self.clock()
        with self.lease.fenced(epoch), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, periodic_task_id, changed_at FROM {CHANGE} ORDER BY id LIMIT %s",
                [PICKUP_BATCH],
            )
            changes = cursor.fetchall()
            if not changes:
                return
            first_seen: dict[int, datetime] = {}
            for _, task_id, changed_at in changes:
                first_seen.setdefault(task_id, changed_at)
            definitions = definitions_load(cursor, first_seen)
            cursor.execute(
                f"SELECT s.periodic_task_id, {_STATE_COLUMNS} FROM {STATE} s "
                f"WHERE s.periodic_task_id = ANY(%s) FOR UPDATE",
                [list(first_seen)],
            )
            states = {row[0]: State.from_row(row[1:]) for row in cursor.fetchall()}
            gone = [task_id for task_id in first_seen if task_id not in definitions]
            rows = [
                self._refreshed(definition, states.get(task_id), first_seen[task_id], now)
                for task_id, definition in definitions.items()
            ]
            if gone:
                cursor.execute(f"DELETE FROM {STATE} WHERE periodic_task_id = ANY(%s)", [gone])
            # A buffered slot waits for its task to be free, not for it to come back.
            stopped = gone + [row[0] for row in rows if not row[2]]
            if stopped:
                cursor.execute(
                    f"UPDATE {OCCURRENCE} SET status = 'skipped' "
                    f"WHERE status = 'buffered' AND periodic_task_id = ANY(%s)",
                    [stopped],
                )
            if rows:
                cursor.execute(
                    f"""
                    INSERT INTO {STATE} AS s (
                        periodic_task_id, first_seen_at, active, timing, next_slot_at, due_at,
                        last_slot_at, overlap, catchup_window, run_all, pause_note
                    )
                    SELECT (e->>0)::int, to_timestamp((e->>1)::float8), (e->>2)::bool, e->>3,
                           to_timestamp((e->>4)::float8), to_timestamp((e->>5)::float8),
                           NULL, 'skip', %s, false, ''
                    FROM json_array_elements(%s::json) AS e
                    ON CONFLICT (periodic_task_id) DO UPDATE SET
                        active = excluded.active, timing = excluded.timing,
                        next_slot_at = excluded.next_slot_at, due_at = excluded.due_at
                    """,
                    [settings.SCHEDULER_CATCHUP_WINDOW, _json_rows(rows)],
                )
            cursor.execute(f"DELETE FROM {CHANGE} WHERE id = ANY(%s)", [[c[0] for c in changes]])
        report.picked_up += len(changes)

    def _refreshed(
        self, definition: Definition, state: State | None, seen: datetime, now: datetime
    ) -> tuple:
        """(id, first_seen, active, timing, next_slot, due) of a changed task.

        Unchanged timing keeps its next slot, so what catch-up owes stays owed. New timing,
        or a task enabled again, starts at the first slot after now: the slots of the time
        it was paused or timed otherwise are not owed. A new task starts at its first slot,
        also when its row was made before this scheduler read it (a policy set with the
        task, in the admin's inline): such a row has no timing yet.
        """
        first_seen = state.first_seen_at if state else seen
        try:
            spec = spec_of(definition, first_seen)
        except timing.ScheduleError as error:
            logger.error("Periodic task %s can't be scheduled: %s", definition.name, error)
            return (definition.pk, first_seen, False, UNSCHEDULABLE, None, None)
        timed = fingerprint(definition)
        if not definition.enabled:
            return (definition.pk, first_seen, False, timed, None, None)
        if state is not None and state.active and state.timing == timed:
            next_slot = state.next_slot_at
        elif state is None or not state.timing or isinstance(spec.rule, timing.Clocked):
            after = timing.EARLIEST if state is None else state.last_slot_at or timing.EARLIEST
            next_slot = timing.next_after(spec, after)
        else:
            next_slot = timing.next_after(spec, max(now, state.last_slot_at or now))
        bound = jitter_bound(definition, None if state is None else state.jitter)
        due = (
            None
            if next_slot is None
            else next_slot + jitter_for(definition, spec, next_slot, bound)
        )
        return (definition.pk, first_seen, True, timed, next_slot, due)

    # --- 3. Release buffered -----------------------------------------------------------

    def _release(self, epoch: int, report: TickReport) -> None:
        now = self.clock()
        with self.lease.fenced(epoch), connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT o.id, o.slot_at, o.due_at, s.due_at, {COLUMNS}
                FROM {OCCURRENCE} o
                JOIN {STATE} s ON s.periodic_task_id = o.periodic_task_id
                """
                + JOINS.format(task_id="o.periodic_task_id")
                + f"""
                WHERE o.status = 'buffered' AND s.active AND NOT EXISTS (
                    SELECT 1 FROM {OCCURRENCE} p
                    WHERE p.periodic_task_id = o.periodic_task_id
                      AND p.status IN ('sent', 'started') AND p.live_until > %s
                )
                ORDER BY o.slot_at LIMIT %s
                FOR UPDATE OF o
                """,
                [now, RELEASE_BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            batch = self._next_batch(epoch)
            messages, released = [], []
            runs: dict[int, int] = {}
            for occurrence_id, slot, due, next_due, *definition_row in rows:
                definition = Definition.from_row(definition_row)
                live_until = _expiry(definition, next_due, now)
                try:
                    message = outgoing_build(
                        periodic_task=definition, nominal_at=slot, due_at=due, expires=live_until
                    )
                except ValueError as error:
                    logger.error("Periodic task %s can't be sent: %s", definition.name, error)
                    released.append((occurrence_id, "skipped", None))
                    continue
                messages.append(message)
                released.append((occurrence_id, "sent", live_until))
                runs[definition.pk] = runs.get(definition.pk, 0) + 1
            cursor.execute(
                f"""
                UPDATE {OCCURRENCE} o
                SET status = e->>1, live_until = to_timestamp((e->>2)::float8),
                    batch = CASE WHEN e->>1 = 'sent' THEN %s::bigint END
                FROM json_array_elements(%s::json) AS e WHERE o.id = (e->>0)::bigint
                """,
                [batch, _json_rows(released)],
            )
            _runs_pending(cursor, runs, now)
        self._publish(batch, messages, report)

    # --- 4. Dispatch -------------------------------------------------------------------

    def _dispatch(self, epoch: int, report: TickReport) -> bool:
        """Send one batch of due rows; True when the batch was full (more may be due)."""
        now = self.clock()
        self._tenant_jitter = settings.SCHEDULER_TENANT_JITTER
        with self.lease.fenced(epoch), connection.cursor() as cursor:
            # Binary results: psycopg's C loaders read the timestamps, several per row.
            with psycopg.Cursor(connection.connection) as binary:
                binary.execute(
                    f"SELECT {_STATE_COLUMNS}, {COLUMNS} FROM {STATE} s "
                    + JOINS.format(task_id="s.periodic_task_id")
                    + " WHERE s.due_at <= %s ORDER BY s.due_at LIMIT %s",
                    [now, self.dispatch_batch],
                    binary=True,
                )
                rows = binary.fetchall()
            if not rows:
                return False
            due = [
                (State.from_row(row[:10]), Definition.from_row(row[10 : 10 + WIDTH]))
                for row in rows
            ]
            running, buffered = self._in_flight(cursor, due, now)
            records: list[Record] = []
            advances: list[tuple] = []
            for state, definition in due:
                advance = self._plan(state, definition, now, running, buffered, records)
                advances.append(advance)
            batch = self._next_batch(epoch)
            inserted = self._record(cursor, records, advances, batch, now)
        sent = []
        for record in records:
            if _slot_key(record) not in inserted:
                continue  # recorded before (a policy edit rewound the row): never twice
            if record.status == "sent":
                sent.append(record)
            elif record.status == "skipped":
                report.skipped += 1
            elif record.status == "missed":
                report.missed += record.slots
            elif record.status == "buffered":
                report.buffered += 1
        # The previous batch was publishing while this one was read, planned and recorded.
        self._published(report)
        if report.unpublished:
            return False  # this batch is recorded: the next tick's recovery publishes it
        self._publishing = (batch, self._publisher().submit(_build_and_publish, sent))
        return len(rows) == self.dispatch_batch

    def _publisher(self) -> ThreadPoolExecutor:
        """One thread that builds and publishes a committed batch's messages while the main
        thread reads, plans and records the next batch: PostgreSQL runs on another core,
        and the main thread waits for it with the GIL released. A batch is handed over
        only after the one before it was published and confirmed, so batches reach the
        broker in order, and a failed one stops the dispatching that tick."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dispatch-publish")
        return self._executor

    def _published(self, report: TickReport) -> None:
        """Wait for the batch being published, if any; confirm it, or count what failed."""
        if self._publishing is None:
            return
        batch, future = self._publishing
        self._publishing = None
        messages, result = future.result()
        self._publish(batch, messages, report, result=result)

    def _in_flight(self, cursor, due, now) -> tuple[set[int], set[int]]:
        """Of the due tasks with an overlap policy, those with an occurrence still running
        (sent and not expired, or started and within its time limit), and those holding a
        buffered one."""
        watched = [definition.pk for state, definition in due if state.overlap != "allow_all"]
        if not watched:
            return set(), set()
        cursor.execute(
            f"""
            SELECT periodic_task_id, bool_or(status = 'buffered'),
                   bool_or(status IN ('sent', 'started') AND live_until > %s)
            FROM {OCCURRENCE}
            WHERE periodic_task_id = ANY(%s) AND status IN ('sent', 'started', 'buffered')
            GROUP BY periodic_task_id
            """,
            [now, watched],
        )
        running, buffered = set(), set()
        for task_id, has_buffered, is_running in cursor.fetchall():
            if is_running:
                running.add(task_id)
            if has_buffered:
                buffered.add(task_id)
        return running, buffered

    def _plan(
        self,
        state: State,
        definition: Definition,
        now: datetime,
        running: set[int],
        buffered: set[int],
        records: list[Record],
    ) -> tuple:
        """Record what `definition` owes at `now`; return its state row's advance.

        A definition that can't be scheduled or sent (a bad schedule, arguments that are
        no JSON) is logged and set inactive, without stopping the others; saving the task
        again makes it active.
        """
        recorded = len(records)
        try:
            return self._owed(state, definition, now, running, buffered, records)
        except (timing.ScheduleError, ValueError) as error:
            del records[recorded:]
            logger.error("Periodic task %s can't be sent: %s", definition.name, error)
            return (definition.pk, state.last_slot_at, None, None, False)

    def _owed(
        self,
        state: State,
        definition: Definition,
        now: datetime,
        running: set[int],
        buffered: set[int],
        records: list[Record],
    ) -> tuple:
        pk = definition.pk
        spec = spec_of(definition, state.first_seen_at)
        bound = jitter_bound(definition, state.jitter, tenant_default=self._tenant_jitter)
        offset = state.due_at - state.next_slot_at if state.next_slot_at else timedelta(0)
        window = timedelta(seconds=state.catchup_window)
        slot = state.next_slot_at
        following = timing.next_after(spec, slot)
        if slot + window >= now - offset and (following is None or following > now - offset):
            run, last, next_slot = (slot,), slot, following  # the usual case: one slot due
        else:
            # Owed from the stored next slot on: the slots before it were dealt with, or
            # fell in a pause or under an earlier timing.
            slots = timing.slots_due(
                spec,
                slot - ONE_MICROSECOND,
                now - offset,
                catchup_window=window,
                run_all=state.run_all,
                limit=RUN_ALL_LIMIT,
            )
            for span in (slots.missed, slots.coalesced):
                if span.count:
                    records.append(
                        Record(
                            definition,
                            span.first,
                            span.first + offset,
                            "missed",
                            slots=span.count,
                            last_slot_at=span.last,
                        )
                    )
            run, last, next_slot = slots.run, slots.last_nominal, slots.next_nominal
        next_due = None
        if next_slot is not None:
            next_due = next_slot + jitter_for(definition, spec, next_slot, bound)
        # Judged once: the slots this tick sends for one schedule are one catch-up, and
        # with run_all every one of them runs, unless an earlier occurrence still runs.
        was_running = pk in running
        for slot in run:
            due_at = slot + offset
            if was_running and state.overlap == "skip":
                records.append(Record(definition, slot, due_at, "skipped"))
            elif was_running and state.overlap == "buffer_one":
                status = "skipped" if pk in buffered else "buffered"
                buffered.add(pk)
                records.append(Record(definition, slot, due_at, status))
            else:
                outgoing_check(definition)  # built after the commit, in the publishing thread
                live_until = _expiry(definition, next_due, now)
                records.append(Record(definition, slot, due_at, "sent", live_until=live_until))
        return (pk, last, next_slot, next_due, next_slot is not None)

    def _record(
        self, cursor, records: list[Record], advances: list[tuple], batch: int, now: datetime
    ) -> set:
        """Insert the occurrences, count the new sent ones (a PendingRuns row, for the
        PeriodicTask counts; see `_fold_runs`) and advance the state rows, in one statement
        (one round trip: a batch waits for each); the (task id, slot epoch second) pairs
        that were new. The rows go as jsonb: parsed once, where json is parsed again by
        each `->>` (a fifth of the statement's time)."""
        rows = [
            (
                r.definition.pk,
                r.definition.name,
                r.definition.schema_name,
                r.slot_at,
                r.due_at,
                r.slots,
                r.last_slot_at,
                r.status,
                r.live_until,
            )
            for r in records
        ]
        cursor.execute(
            f"""
            WITH recorded AS (
                INSERT INTO {OCCURRENCE} (
                    periodic_task_id, name, schema_name, slot_at, due_at, slots, last_slot_at,
                    status, recorded_at, batch, live_until, worker, error
                )
                SELECT (e->>0)::int, e->>1, e->>2,
                       to_timestamp((e->>3)::float8), to_timestamp((e->>4)::float8),
                       (e->>5)::int, to_timestamp((e->>6)::float8), e->>7, %(now)s,
                       CASE WHEN e->>7 = 'sent' THEN %(batch)s::bigint END,
                       to_timestamp((e->>8)::float8), '', ''
                FROM jsonb_array_elements(%(records)s::jsonb) AS e
                ON CONFLICT (periodic_task_id, slot_at) DO NOTHING
                RETURNING periodic_task_id, slot_at, status
            ), counted AS (
                INSERT INTO {PENDING} (task_ids, runs, sent_at)
                SELECT array_agg(periodic_task_id), array_agg(n), %(now)s
                FROM (
                    SELECT periodic_task_id, count(*)::int AS n FROM recorded
                    WHERE status = 'sent' GROUP BY periodic_task_id
                ) AS sent
                HAVING count(*) > 0
            ), advanced AS (
                UPDATE {STATE} s
                SET last_slot_at = to_timestamp((e->>1)::float8),
                    next_slot_at = to_timestamp((e->>2)::float8),
                    due_at = to_timestamp((e->>3)::float8), active = (e->>4)::bool
                FROM jsonb_array_elements(%(advances)s::jsonb) AS e
                WHERE s.periodic_task_id = (e->>0)::int
            )
            SELECT periodic_task_id, extract(epoch FROM slot_at)::bigint FROM recorded
            """,
            {
                "now": now,
                "batch": batch,
                "records": _json_rows(rows),
                "advances": _json_rows(advances),
            },
        )
        inserted = set(cursor.fetchall())
        if len(inserted) < len(records):
            logger.warning(
                "%s occurrences were recorded already and are not sent again",
                len(records) - len(inserted),
            )
        return inserted

    def _fold_runs(self, epoch: int) -> bool:
        """Add the oldest pending runs, about FOLD_LIMIT task counts, to their tasks'
        total_run_count, and set last_run_at to the time of each task's latest send; True
        when more remain.

        In one fenced transaction that deletes the PendingRuns rows it adds: each send is
        counted once, whatever crashes when. Run when the dispatcher is idle (and every
        FOLD_EVERY seconds during a long herd), off the path of the sends themselves.
        """
        self._folded_at = time.monotonic()
        with self.lease.fenced(epoch), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, cardinality(task_ids) FROM {PENDING} ORDER BY id LIMIT 1000"
            )
            pending = cursor.fetchall()
            if not pending:
                return False
            taken, size = [], 0
            for row_id, tasks in pending:
                if taken and size + tasks > FOLD_LIMIT:
                    break
                taken.append(row_id)
                size += tasks
            cursor.execute(
                f"""
                WITH taken AS (
                    DELETE FROM {PENDING} WHERE id = ANY(%s) RETURNING id, task_ids, runs, sent_at
                ), counted AS (
                    SELECT u.task_id, sum(u.n) AS n,
                           (array_agg(taken.sent_at ORDER BY taken.id DESC))[1] AS sent_at
                    FROM taken, unnest(taken.task_ids, taken.runs) AS u(task_id, n)
                    GROUP BY u.task_id
                )
                UPDATE {TASK} t
                SET last_run_at = counted.sent_at, total_run_count = t.total_run_count + counted.n
                FROM counted WHERE t.id = counted.task_id
                """,
                [taken],
            )
        return len(taken) < len(pending)

    # --- Publishing ------------------------------------------------------------------

    def _next_batch(self, epoch: int) -> int:
        self._batches += 1
        return (epoch << BATCH_BITS) | self._batches

    def _publish(
        self,
        batch: int,
        messages: list[Outgoing],
        report: TickReport,
        *,
        result: PublishReport | None = None,
    ) -> None:
        """Publish `messages` (or take `result`, their publishing done elsewhere); confirm
        the batch when all reached the broker, else count them for the recovery."""
        if messages:
            if result is None:
                result = publish_batch(messages, finish_on_stop=True)
            report.sent += len(result.published)
            if sent_logger.isEnabledFor(logging.INFO) and result.published:
                # One record per batch, one line per message in it: a record per message
                # (its creation, filters, formatting and write) cost more than building and
                # sending the message itself, 5 s of a 100k herd.
                sent_logger.info(
                    "\n".join(
                        f"Sending due task {message.headers.get('periodic_task_name')} "
                        f"({message.task_name}) for {message.headers.get('nominal_time')}"
                        for message in result.published
                    )
                )
            if not result.complete:
                # Recorded as sent but maybe not in the broker: the next tick's recovery
                # publishes them again, from this batch on.
                report.unpublished += len(messages) - len(result.published)
                if result.error is not None:
                    report.errors.append(repr(result.error))
                return
        self._confirm(batch)


def _build_and_publish(records: list[Record]) -> tuple[list[Outgoing], PublishReport | None]:
    """The messages of a committed batch's sent records, published (the publishing thread)."""
    messages = [record.message() for record in records]
    return messages, publish_batch(messages, finish_on_stop=True) if messages else None


def _runs_pending(cursor, counts: dict[int, int], now: datetime) -> None:
    """Append the sends of one batch, task id -> slots sent, to PendingRuns: one row
    whatever the batch size, so counting costs the send path next to nothing."""
    if counts:
        cursor.execute(
            f"INSERT INTO {PENDING} (task_ids, runs, sent_at) VALUES (%s::int[], %s::int[], %s)",
            [_int_array(counts), _int_array(counts.values()), now],
        )


def _int_array(values) -> str:
    """Integers as a PostgreSQL array literal: one string, not a value per element."""
    return "{" + ",".join(map(str, values)) + "}"


def _json_rows(rows) -> str:
    """Rows as one JSON array of arrays, for json_array_elements: a batch goes to the
    server as one string, not as arrays psycopg would adapt value by value. Times go as
    epoch seconds (SQL: to_timestamp((e->>n)::float8))."""
    return json.dumps(list(rows), default=_epoch, separators=(",", ":"))


def _epoch(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _slot_key(record: Record) -> tuple[int, int]:
    return record.definition.pk, int(record.slot_at.timestamp())


def _expiry(definition: Definition, next_due: datetime | None, now: datetime) -> datetime | None:
    """When a message sent now stops being worth starting: when the schedule sends the
    next one; for a schedule with no next one, after its job kind's expiry."""
    if next_due is not None and next_due > now:
        return next_due
    job = job_for_task(definition.task)
    return now + timedelta(seconds=job.expires) if job else None


def started_live_until(time_limit: float | None, now: datetime) -> datetime:
    """Until when a started occurrence counts as running: its hard time limit and a grace."""
    limit = time_limit or settings.CELERY_TASK_TIME_LIMIT
    return now + timedelta(seconds=limit) + UNFINISHED_GRACE
