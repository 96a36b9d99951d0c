"""Bench PeriodicTasks, written and removed in bulk with SQL.

A million rows through bulk_create take minutes; one INSERT ... SELECT generate_series
takes seconds, and the change-log triggers (scheduling_platform 0004) fire once for the
statement, as for any bulk write. The rows are shaped like the platform's per-tenant
tasks: a registered job, the `_schema_name` header, two kinds per tenant schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.jobs import DIGEST_DISPATCH, SYNC

TASK = "public.django_celery_beat_periodictask"
INTERVAL = "public.django_celery_beat_intervalschedule"
STATE = "public.scheduling_platform_schedulestate"
CHANGE = "public.scheduling_platform_schedulechange"
OCCURRENCE = "public.scheduling_platform_occurrence"
TENANT_TASK = "public.scheduling_platform_tenanttask"

PREFIX = "bench:"
KINDS = ("sync", "digests")  # index % 2: SYNC, DIGEST_DISPATCH
PROBE_EVERY = 3600  # a probe never falls due twice in a run


@dataclass(frozen=True)
class Fleet:
    """`size` tenant tasks that run every `every` seconds on a grid: task i's slots are
    start + phase(i) + k * every. Phases are whole seconds, as slots are; spread over
    the interval, or all zero (a herd)."""

    prefix: str  # bench:<run>:<tag>:
    size: int
    every: int
    start: int  # epoch seconds
    spread: bool = True

    def phase(self, index: int) -> int:
        return index * self.every // self.size if self.spread else 0

    def anchor(self, index: int) -> int:
        return self.start + self.phase(index)

    def name(self, index: int) -> str:
        return f"{self.prefix}tenant:bench-{index // 2:07d}:{KINDS[index % 2]}"

    def index_of(self, name: str) -> int | None:
        """The index of a name of this fleet; None for any other name."""
        if not name.startswith(self.prefix):
            return None
        try:
            _, schema, kind = name[len(self.prefix) :].split(":")
            index = int(schema.removeprefix("bench-")) * 2 + KINDS.index(kind)
        except ValueError:
            return None
        return index if index < self.size else None

    def nearest_slot(self, index: int, moment: float) -> int:
        """The slot of task `index`'s grid nearest to `moment`."""
        anchor = self.anchor(index)
        return anchor + max(0, round((moment - anchor) / self.every)) * self.every

    def slots(self, low: float, high: float) -> Iterator[tuple[int, int]]:
        """Every (index, slot) with low <= slot < high."""
        for index in range(self.size):
            anchor = self.anchor(index)
            slot = anchor + max(0, math.ceil((low - anchor) / self.every)) * self.every
            while slot < high:
                yield index, slot
                slot += self.every


def like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def fleet_create(fleet: Fleet, *, queue: str, stock_armed: bool = False) -> None:
    """Write the fleet's rows and its IntervalSchedule in one transaction.

    With `stock_armed` each row's last_run_at is one interval before its first slot,
    so the stock scheduler (which counts from the last run) sends it at that slot.
    """
    with transaction.atomic():
        interval = IntervalSchedule.objects.create(
            every=fleet.every, period=IntervalSchedule.SECONDS
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {TASK} (
                    name, task, args, kwargs, queue, headers, one_off, start_time, enabled,
                    last_run_at, total_run_count, date_changed, description, interval_id
                )
                SELECT %(prefix)s || 'tenant:' || schema || ':' || kind,
                       CASE kind WHEN 'sync' THEN %(sync)s ELSE %(digests)s END,
                       '[]', '{{}}', %(queue)s,
                       '{{"_schema_name": "' || schema || '"}}',
                       false, start_time, true,
                       CASE WHEN %(armed)s THEN start_time - %(every)s * interval '1 second' END,
                       0, now(),
                       CASE kind WHEN 'sync' THEN %(sync_text)s ELSE %(digests_text)s END,
                       %(interval)s
                FROM generate_series(0, %(size)s - 1) AS g,
                     LATERAL (SELECT 'bench-' || lpad((g / 2)::text, 7, '0') AS schema,
                                     CASE g %% 2 WHEN 0 THEN 'sync' ELSE 'digests' END AS kind,
                                     to_timestamp(%(start)s + g::bigint * %(spread)s / %(size)s)
                                         AS start_time) AS row
                """,
                {
                    "prefix": fleet.prefix,
                    "sync": SYNC.task_name,
                    "digests": DIGEST_DISPATCH.task_name,
                    "sync_text": SYNC.description,
                    "digests_text": DIGEST_DISPATCH.description,
                    "queue": queue,
                    "armed": stock_armed,
                    "every": fleet.every,
                    "interval": interval.pk,
                    "size": fleet.size,
                    "start": fleet.start,
                    "spread": fleet.every if fleet.spread else 0,
                },
            )


def fleet_arm_stock(fleet: Fleet, *, at: float) -> None:
    """Set every row's last_run_at one interval before its first slot at or after `at`.

    A fresh session: the change-log trigger's plan is then made for this many rows.
    """
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {TASK} SET last_run_at = start_time + (GREATEST(0, ceil(
                extract(epoch FROM to_timestamp(%(at)s) - start_time) / %(every)s)) - 1)
                * %(every)s * interval '1 second'
            WHERE name LIKE %(pattern)s
            """,
            {"at": at, "every": fleet.every, "pattern": like_prefix(fleet.prefix)},
        )
    connection.close()


def probe_create(*, name: str, queue: str) -> float:
    """A platform-shaped task (no jitter) due at once, saved through the model as the admin
    saves one; returns when it was committed. Its last run, an interval ago, makes the
    stock scheduler send it at once too."""
    now = datetime.now(UTC)
    with transaction.atomic():
        interval = IntervalSchedule.objects.create(
            every=PROBE_EVERY, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=name,
            task=SYNC.task_name,
            interval=interval,
            queue=queue,
            start_time=now.replace(microsecond=0),
            last_run_at=now - timedelta(seconds=PROBE_EVERY),
        )
    return datetime.now(UTC).timestamp()


def changes_pending() -> int:
    """Rows in the change log: the project's scheduler has not picked them up yet."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {CHANGE}")
        return cursor.fetchone()[0]


def rows_delete(prefix: str) -> int:
    """Delete the tasks named prefix*, their state, occurrences, changes and schedules.

    Plain SQL in one transaction: the ORM would send a pre_delete signal per row (7 ms
    each). The delete's own trigger writes a change row per task; they go too.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_gone ON COMMIT DROP AS "
            f"SELECT id, interval_id FROM {TASK} WHERE name LIKE %s",
            [like_prefix(prefix)],
        )
        cursor.execute("ANALYZE bench_gone")
        for table in (TENANT_TASK, STATE, OCCURRENCE):
            cursor.execute(
                f"DELETE FROM {table} x USING bench_gone g WHERE x.periodic_task_id = g.id"
            )
        cursor.execute(f"DELETE FROM {TASK} t USING bench_gone g WHERE t.id = g.id")
        deleted = cursor.rowcount
        cursor.execute(f"DELETE FROM {CHANGE} x USING bench_gone g WHERE x.periodic_task_id = g.id")
        cursor.execute(
            f"DELETE FROM {INTERVAL} i WHERE i.id IN (SELECT interval_id FROM bench_gone) "
            f"AND NOT EXISTS (SELECT 1 FROM {TASK} t WHERE t.interval_id = i.id)"
        )
    if deleted:
        PeriodicTasks.update_changed()  # a stock beat still running reloads
    return deleted


def tables_vacuum(*, full: bool = False) -> None:
    """VACUUM ANALYZE the tables a run writes in bulk. Autovacuum would, in time (this
    machine's server runs without it); without either, the dead rows of a deleted million
    slow every scan of the next run, and the planner guesses without statistics.

    `full` after a delete: the tables shrink back to what is left, so a table that held a
    million rows is not planned as a long scan of a few (a stale row count over many pages
    made the stock scheduler's per-row lookups scan the whole file).
    """
    with connection.cursor() as cursor:
        for table in (TASK, STATE, CHANGE, OCCURRENCE):
            cursor.execute(f"VACUUM {'FULL ' if full else ''}ANALYZE {table}")


def autovacuum_on() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        return cursor.fetchone()[0] == "on"


def rows_count(prefix: str) -> int:
    return PeriodicTask.objects.filter(name__startswith=prefix).count()
