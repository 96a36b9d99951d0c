"""PeriodicTask rows as the dispatcher reads them: one SQL query for a batch, no ORM.

Building a hundred thousand model instances (a task and its schedule each) costs seconds;
a `Definition` is a slotted object with the attributes `timing.spec_from_periodic_task`
and `publish.outgoing_build` read, so both work unchanged on either.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.backends.utils import CursorWrapper
from django_tenants.utils import get_public_schema_name

from scheduling.dispatch import timing

# The columns of a definition, in the order Definition.from_row reads them. `t` is the
# PeriodicTask; i, c, so, cl its schedule tables, LEFT JOINed (see JOINS).
COLUMNS = """
    t.id, t.name, t.task, t.args, t.kwargs, t.queue, t.exchange, t.routing_key, t.headers,
    t.priority, t.expires, t.expire_seconds, t.one_off, t.start_time, t.enabled,
    i.every, i.period,
    c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week, c.timezone,
    so.event, so.latitude, so.longitude,
    cl.clocked_time
"""
WIDTH = 27
JOINS = """
    JOIN public.django_celery_beat_periodictask t ON t.id = {task_id}
    LEFT JOIN public.django_celery_beat_intervalschedule i ON i.id = t.interval_id
    LEFT JOIN public.django_celery_beat_crontabschedule c ON c.id = t.crontab_id
    LEFT JOIN public.django_celery_beat_solarschedule so ON so.id = t.solar_id
    LEFT JOIN public.django_celery_beat_clockedschedule cl ON cl.id = t.clocked_id
"""


@dataclass(frozen=True, slots=True)
class IntervalRow:
    every: int
    period: str


@dataclass(frozen=True, slots=True)
class CrontabRow:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    timezone: str


@dataclass(frozen=True, slots=True)
class SolarRow:
    event: str
    latitude: Any
    longitude: Any


@dataclass(frozen=True, slots=True)
class ClockedRow:
    clocked_time: datetime


@dataclass(slots=True)
class Definition:
    pk: int
    name: str
    task: str
    args: str
    kwargs: str
    queue: str | None
    exchange: str | None
    routing_key: str | None
    headers: str
    priority: int | None
    expires: datetime | None
    expire_seconds: int | None
    one_off: bool
    start_time: datetime | None
    enabled: bool
    interval: IntervalRow | None
    crontab: CrontabRow | None
    solar: SolarRow | None
    clocked: ClockedRow | None
    # schema_name, once worked out: a batch asks for it several times per definition, and
    # schema_of's cache can't hold the headers of a hundred thousand tenants' tasks.
    _schema: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: tuple) -> Definition:
        (pk, name, task, args, kwargs, queue, exchange, routing_key, headers, priority) = row[:10]
        (expires, expire_seconds, one_off, start_time, enabled, every, period) = row[10:17]
        minute, hour, day_of_month, month_of_year, day_of_week, zone = row[17:23]
        event, latitude, longitude, clocked_time = row[23:27]
        return cls(
            pk=pk,
            name=name,
            task=task,
            args=args,
            kwargs=kwargs,
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
            headers=headers,
            priority=priority,
            expires=expires,
            expire_seconds=expire_seconds,
            one_off=one_off,
            start_time=start_time,
            enabled=enabled,
            interval=None if every is None else IntervalRow(every, period),
            crontab=None
            if minute is None
            else CrontabRow(minute, hour, day_of_month, month_of_year, day_of_week, zone),
            solar=None if event is None else SolarRow(event, latitude, longitude),
            clocked=None if clocked_time is None else ClockedRow(clocked_time),
        )

    @property
    def id(self) -> int:
        return self.pk

    @property
    def schema_name(self) -> str:
        """The tenant schema its messages carry; blank for a platform task (or bad headers)."""
        if self._schema is None:
            self._schema = schema_of(self.headers)
        return self._schema


@functools.lru_cache(maxsize=4096)
def schema_of(headers: str) -> str:
    try:
        parsed = json.loads(headers or "{}")
    except ValueError:
        return ""
    schema = parsed.get("_schema_name") if isinstance(parsed, dict) else None
    if not isinstance(schema, str) or schema == get_public_schema_name():
        return ""
    return schema


def definitions_load(cursor: CursorWrapper, task_ids: Iterable[int]) -> dict[int, Definition]:
    """The definitions of `task_ids` that still exist, by id, in one query."""
    cursor.execute(
        f"SELECT {COLUMNS} FROM unnest(%s::int[]) AS wanted(id) "
        + JOINS.format(task_id="wanted.id"),
        [list(task_ids)],
    )
    return {row[0]: Definition.from_row(row) for row in cursor.fetchall()}


# --- Timing of a definition -------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _crontab(fields: CrontabRow) -> timing.Crontab:
    """Parsed crontabs, shared: many tasks share few crontabs, and parsing is the cost."""
    return timing.Crontab.from_fields(
        minute=fields.minute,
        hour=fields.hour,
        day_of_month=fields.day_of_month,
        month_of_year=fields.month_of_year,
        day_of_week=fields.day_of_week,
        zone=fields.timezone,
    )


def spec_of(definition: Definition, first_seen: datetime) -> timing.Schedule:
    """The definition's Schedule; raises timing.ScheduleError for one that can't run.

    Shared between definitions with the same timing (and first sight): a Schedule is
    frozen, building and checking one is a fifth of a message's planning, and a herd's
    tasks are mostly alike.
    """
    if (
        definition.interval is None
        and definition.crontab is None
        and definition.solar is None
        and definition.clocked is None
    ):
        raise timing.ScheduleError(f"Periodic task {definition.name!r} has no schedule")
    return _spec(*_timing_fields(definition), first_seen)


def _timing_fields(definition: Definition) -> tuple:
    """What a definition's slots follow from, in _spec's order of arguments."""
    return (
        definition.interval,
        definition.crontab,
        definition.solar,
        definition.clocked,
        definition.start_time,
        definition.expires,
        definition.one_off,
    )


@dataclass(frozen=True, slots=True)
class _Timing:
    """The fields of a definition that timing.spec_from_periodic_task reads."""

    name: str
    interval: IntervalRow | None
    crontab: CrontabRow | None
    solar: SolarRow | None
    clocked: ClockedRow | None
    start_time: datetime | None
    expires: datetime | None
    one_off: bool


@functools.lru_cache(maxsize=16384)
def _spec(
    interval: IntervalRow | None,
    crontab: CrontabRow | None,
    solar: SolarRow | None,
    clocked: ClockedRow | None,
    start_time: datetime | None,
    expires: datetime | None,
    one_off: bool,
    first_seen: datetime,
) -> timing.Schedule:
    if crontab is not None and interval is None:
        return timing.Schedule(
            rule=_crontab(crontab),
            first_seen=first_seen,
            start_time=start_time,
            expires=expires,
            one_off=one_off,
        )
    if interval is not None and interval.period not in PERIODS:
        raise timing.ScheduleError(f"Unknown interval period {interval.period!r}")
    fields = _Timing("", interval, crontab, solar, clocked, start_time, expires, one_off)
    return timing.spec_from_periodic_task(fields, first_seen=first_seen)


PERIODS = frozenset({"days", "hours", "minutes", "seconds", "microseconds"})


def fingerprint(definition: Definition) -> str:
    """Changes when, and only when, the definition's slots could change."""
    return hashlib.sha256(repr(_timing_fields(definition)).encode()).hexdigest()[:32]


def jitter_bound(
    definition: Definition, policy: int | None, *, tenant_default: int | None = None
) -> int:
    """The jitter bound in seconds: the policy's, else the default of the task's scope.

    `tenant_default` is settings.SCHEDULER_TENANT_JITTER read once by a caller with many
    definitions to judge (reading a setting costs more than the rest of this)."""
    if policy is not None:
        return policy
    if not definition.schema_name:
        return 0
    return settings.SCHEDULER_TENANT_JITTER if tenant_default is None else tenant_default


def jitter_for(
    definition: Definition, spec: timing.Schedule, slot: datetime, bound: int
) -> timedelta:
    """How long after `slot` it is sent: a hash of the name, below `bound` and below a tenth
    of the gap to the following slot, so jitter never reorders or merges slots."""
    if bound <= 0:
        return timedelta(0)
    following = timing.next_after(spec, slot)
    if following is not None:
        bound = min(bound, int((following - slot).total_seconds()) // 10)
    return timedelta(seconds=timing.jitter_offset(definition.name, max(bound, 0)))
