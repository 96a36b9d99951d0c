"""When schedules fall due: pure functions over django-celery-beat's schedule kinds.

Every time at this module's interface is an aware datetime, answered in UTC. A
slot is one nominal time of a schedule, a whole second (occurrence keys drop
microseconds, so a slot must not have any): a stated instant with a fraction of a
second (a start time, a clocked time, a sunrise) is rounded up, never run early.

Interval schedules run on a fixed grid, anchor + k * every, anchored at the row's
start_time, or, without one, at the time the platform first saw the row (the
first slot is then one interval later, as with stock beat). Stock beat schedules
"last run + interval", so every late tick pushes all later runs back and slots
drift; on a grid a late tick delays one message, the next slot stays where it was,
and every process computes the same nominal times, which the occurrence keys need.

Crontab schedules are evaluated in the row's own IANA zone, with celery's crontab
syntax and day rule: a day must match the month, the day of the month AND the day
of the week (celery ANDs them; Vixie cron ORs a restricted day of month with a
restricted day of week). The written DST rule:
  - a wall-clock time skipped in spring runs once, at the first valid instant after
    it: in Berlin on 29 Mar 2026, 02:30 runs at 03:00 CEST (01:00 UTC), and any
    other skipped times of that night run at that same instant, once;
  - a wall-clock time repeated in autumn runs once, at its first occurrence (fold=0):
    in Berlin on 25 Oct 2026, 02:30 runs at 02:30 CEST (00:30 UTC), and not again
    at 02:30 CET, so an every-15-minutes crontab pauses for the repeated hour.

Solar schedules use celery's own solar schedule (ephem). A clocked schedule has
its one time. Around every kind: nothing runs before start_time, nor at or after
expires (as stock beat, which stops once now >= expires), and a one-off schedule
runs only its first slot. A row's expire_seconds is not a bound: it is the message
expiry, the publisher's business.

Catch-up (slots_due): after downtime, slots older than the catch-up window are
missed, not run; of the slots inside the window only the latest runs (coalesce),
unless the schedule says run all. Missed slots are counted, not listed, when there
are many, and counted in strides: an interval's arithmetically, so a month down for
a per-second schedule costs no more than a minute down, a crontab's a day at a time.

Jitter (jitter_offset) spreads a schedule's sends over a bound, taken from a hash
of its name: the same schedule always gets the same offset, in every process. It
moves when a slot is sent, never its nominal time, so occurrence keys stay put.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import ParseException
from celery.schedules import crontab as celery_crontab
from celery.schedules import solar as celery_solar

if TYPE_CHECKING:
    from django_celery_beat.models import PeriodicTask

ONE_MICROSECOND = timedelta(microseconds=1)
ONE_SECOND = timedelta(seconds=1)
ONE_DAY = timedelta(days=1)
# No lower bound: a clocked time earlier than anything is still its slot.
EARLIEST = datetime.min.replace(tzinfo=UTC)
# A span with more slots than this is told by its count and ends only.
LISTED_CAP = 50


class ScheduleError(ValueError):
    """A schedule this module cannot evaluate: a bad row, or a time without a zone."""


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(f"{what} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + ONE_SECOND


@dataclass(frozen=True)
class Interval:
    """Every `every` (whole seconds) on the grid anchor + k * every."""

    every: timedelta
    anchor: datetime

    def __post_init__(self) -> None:
        if self.every < ONE_SECOND or self.every % ONE_SECOND:
            raise ScheduleError(f"An interval must be whole seconds, at least 1, got {self.every}")
        object.__setattr__(self, "anchor", _ceil_second(_utc(self.anchor, "anchor")))

    def next_after(self, after: datetime) -> datetime:
        return self.anchor + ((after - self.anchor) // self.every + 1) * self.every

    def stretch(self, slot: datetime, high: datetime) -> tuple[int, datetime]:
        """All the grid's slots from `slot` to `high`, counted at once: how many, and the last."""
        count = (high - slot) // self.every + 1
        return count, slot + (count - 1) * self.every


class _OneAtATime:
    def stretch(self, slot: datetime, high: datetime) -> tuple[int, datetime]:
        """Slots that can't be counted in bulk: just `slot`."""
        return 1, slot


@dataclass(frozen=True)
class Crontab:
    """A crontab in its own zone; build it with from_fields, which parses as celery does.

    Days of the week count from Sunday = 0, as in celery and cron.
    """

    minutes_of_day: tuple[int, ...]  # sorted, hour * 60 + minute
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def from_fields(
        cls,
        *,
        minute: Any = "*",
        hour: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        day_of_week: Any = "*",
        zone: Any = "UTC",
    ) -> Crontab:
        """Fields in any form celery's crontab takes ("*/15", "mon-fri", 30, {1, 15}), so
        exactly what django-celery-beat's rows run with stock beat runs here too."""
        try:
            parsed = celery_crontab(
                minute=minute,
                hour=hour,
                day_of_week=day_of_week,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
            )
        except (ValueError, TypeError, ParseException) as exc:
            raise ScheduleError(f"Not a valid crontab: {exc}") from exc
        try:
            zone_info = ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"{zone!s} is not an IANA time zone") from exc
        return cls(
            minutes_of_day=tuple(sorted(h * 60 + m for h in parsed.hour for m in parsed.minute)),
            days_of_month=frozenset(parsed.day_of_month),
            months=frozenset(parsed.month_of_year),
            days_of_week=frozenset(parsed.day_of_week),
            zone=zone_info,
        )

    def next_after(self, after: datetime) -> datetime:
        # Wall times map to instants in order (a skipped one to the end of its gap, a
        # repeated one to its first occurrence), so no time before after's own wall
        # minute can map past `after`. Inside a repeated hour the first few may map
        # before it, which the loop passes over.
        wall = after.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        return next(m for m in map(self._instant, self._walls_from(wall)) if m > after)

    def stretch(self, slot: datetime, high: datetime) -> tuple[int, datetime]:
        """The rest of slot's day up to `high` at once, unless the clock changes within it.

        Between two wall times of one day that are both real and share an offset there
        is no clock change (zones change at most once a day), so each minute in between
        is one slot. Otherwise, and for a slot that a gap moved off its own minute, one.
        """
        local, bound = slot.astimezone(self.zone), high.astimezone(self.zone)
        minutes, day = self.minutes_of_day, local.date()
        start = bisect_left(minutes, _minute_of(local))
        end = len(minutes) if bound.date() > day else bisect_right(minutes, _minute_of(bound))
        if start >= end or minutes[start] != _minute_of(local):
            return 1, slot
        last_wall = datetime.combine(day, _clock(minutes[end - 1]))
        last = self._instant(last_wall).astimezone(self.zone)
        if last.replace(tzinfo=None) != last_wall or last.utcoffset() != local.utcoffset():
            return 1, slot
        return end - start, last.astimezone(UTC)

    def _walls_from(self, wall: datetime):
        """Every matching wall-clock minute from `wall` on, in order."""
        day, first_minute = wall.date(), _minute_of(wall)
        while True:
            matching = self._next_day(day)
            start = bisect_left(self.minutes_of_day, first_minute) if matching == day else 0
            for minute in self.minutes_of_day[start:]:
                yield datetime.combine(matching, _clock(minute))
            day, first_minute = matching + ONE_DAY, 0

    def _next_day(self, day: date) -> date:
        # Ends: celery refuses a day of month that no month of the rule has, and over
        # the 400-year Gregorian cycle every date falls on every day of the week.
        while True:
            if day.month not in self.months:
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            elif day.day in self.days_of_month and day.isoweekday() % 7 in self.days_of_week:
                return day
            else:
                day += ONE_DAY

    def _instant(self, wall: datetime) -> datetime:
        moment = wall.replace(tzinfo=self.zone).astimezone(UTC)  # fold=0: the first of two
        if moment.astimezone(self.zone).replace(tzinfo=None) == wall:
            return moment
        return self._end_of_gap(wall)

    def _end_of_gap(self, wall: datetime) -> datetime:
        """The instant a clock change skips `wall`: the first valid instant after it.

        Read as the offset after the change (fold=1), `wall` lands before the change;
        as the offset before it (fold=0), at or after it. The change lies between,
        found to the second by bisection.
        """
        before = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        after = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        changed_offset = after.astimezone(self.zone).utcoffset()
        low, high = 0, int((after - before).total_seconds())
        while high - low > 1:
            middle = (low + high) // 2
            if (before + middle * ONE_SECOND).astimezone(self.zone).utcoffset() == changed_offset:
                high = middle
            else:
                low = middle
        return before + high * ONE_SECOND


def _clock(minute_of_day: int) -> time:
    return time(minute_of_day // 60, minute_of_day % 60)


def _minute_of(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


@dataclass(frozen=True)
class Solar(_OneAtATime):
    """A solar event at a place, as celery's solar schedule computes it (with ephem)."""

    event: str
    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        self._celery(EARLIEST)  # refuses an unknown event or a place off the globe

    def _celery(self, now: datetime) -> celery_solar:
        try:
            return celery_solar(self.event, self.latitude, self.longitude, nowfun=lambda: now)
        except ValueError as exc:
            raise ScheduleError(str(exc)) from exc

    def next_after(self, after: datetime) -> datetime:
        # Rounded up, the slot is past the event; asked again from the slot, ephem
        # answers the next day's event.
        remaining = self._celery(after).remaining_estimate(after)
        return _ceil_second(after + remaining)


@dataclass(frozen=True)
class Clocked(_OneAtATime):
    """Once, at `at`."""

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _ceil_second(_utc(self.at, "clocked time")))

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None


Rule = Interval | Crontab | Solar | Clocked


@dataclass(frozen=True)
class Schedule:
    """One PeriodicTask's timing: its rule and the bounds around it.

    `first_seen` is when the platform first saw the row. An interval without
    start_time is anchored there, and no crontab or solar slot comes before it; a
    clocked time does not depend on it, so a row saved for "now" still runs.
    """

    rule: Rule
    first_seen: datetime
    start_time: datetime | None = None
    expires: datetime | None = None
    one_off: bool = False

    def __post_init__(self) -> None:
        for name in ("first_seen", "start_time", "expires"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _utc(value, name))

    def bounds(self) -> tuple[datetime, datetime | None]:
        """Every slot lies in (low, high]; high is None when nothing ends the schedule."""
        if self.start_time is not None:
            low = self.start_time - ONE_MICROSECOND  # start_time itself may be a slot
        elif isinstance(self.rule, Clocked):
            low = EARLIEST
        else:
            low = _ceil_second(self.first_seen)
        high = None if self.expires is None else self.expires - ONE_MICROSECOND
        if self.one_off:
            first = self.rule.next_after(low)
            high = first if high is None or first is None else min(high, first)
        return low, high


def spec_from_periodic_task(task: PeriodicTask, *, first_seen: datetime) -> Schedule:
    """The Schedule of a django-celery-beat row.

    Reads the row's schedule object, so load it with select_related("interval",
    "crontab", "solar", "clocked") to keep a batch to one query. `first_seen` is when
    the platform first saw the row (its state row's creation), kept by the caller.
    """
    return Schedule(
        rule=_rule_of(task, first_seen),
        first_seen=first_seen,
        start_time=task.start_time,
        expires=task.expires,
        one_off=task.one_off,
    )


def _rule_of(task: PeriodicTask, first_seen: datetime) -> Rule:
    if task.interval is not None:
        every = timedelta(**{task.interval.period: task.interval.every})
        return Interval(every=every, anchor=task.start_time or first_seen)
    if task.crontab is not None:
        row = task.crontab
        return Crontab.from_fields(
            minute=row.minute,
            hour=row.hour,
            day_of_month=row.day_of_month,
            month_of_year=row.month_of_year,
            day_of_week=row.day_of_week,
            zone=row.timezone,
        )
    if task.solar is not None:
        row = task.solar
        return Solar(event=row.event, latitude=float(row.latitude), longitude=float(row.longitude))
    if task.clocked is not None:
        return Clocked(at=task.clocked.clocked_time)
    raise ScheduleError(f"Periodic task {task.name!r} has no schedule")


def next_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The schedule's first slot strictly after `after`; None when it has no more."""
    low, high = schedule.bounds()
    slot = schedule.rule.next_after(max(_utc(after, "after"), low))
    if slot is None or (high is not None and slot > high):
        return None
    return slot


def jitter_offset(name: str, bound_seconds: int) -> int:
    """A whole number of seconds in [0, bound_seconds) that depends only on `name`.

    SHA-256, not hash(): Python salts str hashes per process, and every beat process
    must give a schedule the same offset. A bound of 0 means no jitter.
    """
    if bound_seconds < 0:
        raise ValueError(f"A jitter bound can't be negative, got {bound_seconds}")
    if bound_seconds == 0:
        return 0
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % bound_seconds


@dataclass(frozen=True)
class SlotSpan:
    """Slots told by how many there are and the first and last of them.

    `listed` holds every one of them, oldest first, when there are at most
    LISTED_CAP; past that it is empty, and the count and ends tell the span.
    """

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    listed: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Slots:
    """What a schedule owes at one tick (see slots_due)."""

    run: tuple[datetime, ...]  # to run now, oldest first
    missed: SlotSpan  # older than the catch-up window: recorded, not run
    coalesced: SlotSpan  # inside the window but passed over for the latest
    last_nominal: datetime | None  # store on the state row: the latest slot dealt with
    next_nominal: datetime | None  # the next slot after it; None when the schedule has ended


def slots_due(
    spec: Schedule,
    last_nominal: datetime | None,
    now: datetime,
    *,
    catchup_window: timedelta,
    run_all: bool,
    limit: int,
) -> Slots:
    """Sort the slots in (last_nominal, now] into run, missed and coalesced.

    `last_nominal` None means the schedule has had no slot yet. A slot older than
    now - catchup_window is missed. Of those inside the window, only the latest runs;
    with run_all every one runs, oldest first, at most `limit` a call: the rest stay
    after the returned last_nominal, and next_nominal is already due (<= now), so
    the next tick carries on. With jitter, pass now minus the schedule's offset: a
    slot falls due when its nominal time plus the offset has passed.
    """
    if catchup_window < timedelta(0):
        raise ValueError(f"A catch-up window can't be negative, got {catchup_window}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    now = _utc(now, "now")
    cursor = EARLIEST if last_nominal is None else _utc(last_nominal, "last_nominal")
    missed = _span(spec, cursor, now - catchup_window - ONE_MICROSECOND)
    cursor = missed.last or cursor
    coalesced = SlotSpan()
    if run_all:
        run = _listed(spec, cursor, now, limit)
    else:
        window = _span(spec, cursor, now)
        run = () if window.last is None else (window.last,)
        if window.count > 1:
            coalesced = _span(spec, cursor, window.last - ONE_MICROSECOND)
    cursor = run[-1] if run else cursor
    return Slots(
        run=run,
        missed=missed,
        coalesced=coalesced,
        last_nominal=None if cursor == EARLIEST else cursor,
        next_nominal=next_after(spec, cursor),
    )


def _span(spec: Schedule, low: datetime, high: datetime) -> SlotSpan:
    """The slots in (low, high], counted in strides (an interval's all at once,
    a crontab's a whole day at a time), never one by one over a long downtime."""
    floor, ceiling = spec.bounds()
    low = max(low, floor)
    high = high if ceiling is None else min(high, ceiling)
    count, first, cursor = 0, None, low
    while (slot := spec.rule.next_after(cursor)) is not None and slot <= high:
        taken, cursor = spec.rule.stretch(slot, high)
        count += taken
        first = first or slot
    if count == 0:
        return SlotSpan()
    listed = _listed(spec, low, high, count) if count <= LISTED_CAP else ()
    return SlotSpan(count=count, first=first, last=cursor, listed=listed)


def _listed(spec: Schedule, low: datetime, high: datetime, limit: int) -> tuple[datetime, ...]:
    """The first `limit` slots in (low, high], oldest first."""
    slots: list[datetime] = []
    cursor = low
    while len(slots) < limit and (slot := next_after(spec, cursor)) is not None and slot <= high:
        slots.append(slot)
        cursor = slot
    return tuple(slots)
