"""When a digest is next due: wall-clock rules in the user's zone, answered in UTC.

Rules are kept in local wall-clock time, as people state them ("daily at 09:00
in Berlin"), and turned into an aware UTC instant only at the end, so a DST
change moves the UTC time and never the local one. Two edge cases, both the
way cron and calendars behave:
  - a local time that does not exist (skipped at the spring change) runs at the
    same offset before the change, which is the first valid time after the gap:
    02:00 on a spring-forward day in Berlin is 03:00 CEST;
  - a local time that happens twice (at the autumn change) runs only the first
    time it happens.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Frequency(StrEnum):
    OFF = "off"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"


# The length a period is taken to have when a user has had no digest yet.
PERIOD_LENGTH = {
    Frequency.HOURLY: timedelta(hours=1),
    Frequency.DAILY: timedelta(days=1),
    Frequency.WEEKLY: timedelta(days=7),
}


def _local_instant(day: date, hour: int, zone: ZoneInfo) -> datetime:
    # fold=0 picks the first of two repeated times, and for a skipped time the
    # pre-change offset, which normalises to just after the gap.
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


def _next_hourly(after: datetime, zone: ZoneInfo) -> datetime:
    # Every elapsed hour at local minute 0, so both 01:00s of an autumn night count.
    local = after.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    candidate = local.astimezone(UTC)
    while candidate <= after:
        candidate += timedelta(hours=1)
    return candidate


def _next_on_days(after: datetime, hour: int, zone: ZoneInfo, weekday: int | None) -> datetime:
    day = after.astimezone(zone).date() - timedelta(days=1)  # a gap can move 00:00 back a day
    while True:
        if weekday is None or day.weekday() == weekday:
            candidate = _local_instant(day, hour, zone)
            if candidate > after:
                return candidate
        day += timedelta(days=1)


def next_due(
    *,
    frequency: str,
    after: datetime,
    zone: ZoneInfo,
    hour: int | None = None,
    weekday: int | None = None,
) -> datetime | None:
    """The first due instant strictly after `after`, in UTC; None when the frequency is off.

    `weekday` counts from Monday = 0, as datetime.weekday() does.
    """
    after = after.astimezone(UTC)
    if frequency == Frequency.OFF:
        return None
    if frequency == Frequency.HOURLY:
        return _next_hourly(after, zone)
    if frequency == Frequency.DAILY:
        weekday = None
    elif frequency != Frequency.WEEKLY:
        raise ValueError(f"Unknown frequency {frequency!r}.")
    if hour is None or (frequency == Frequency.WEEKLY and weekday is None):
        raise ValueError(f"A {frequency} schedule needs an hour, and a weekly one a weekday.")
    return _next_on_days(after, hour, zone, weekday)


def next_due_times(
    *,
    frequency: str,
    after: datetime,
    zone: ZoneInfo,
    count: int,
    hour: int | None = None,
    weekday: int | None = None,
) -> list[datetime]:
    """The next `count` due instants after `after`, in UTC; empty when the frequency is off."""
    times: list[datetime] = []
    while len(times) < count:
        moment = next_due(
            frequency=frequency,
            after=times[-1] if times else after,
            zone=zone,
            hour=hour,
            weekday=weekday,
        )
        if moment is None:
            break
        times.append(moment)
    return times
