"""Times, durations and errors as people read them, in the tenant's or the user's zone.

Plain string formatting on purpose: these run for every row of the run history,
and Django's `date` and `truncatechars` filters cost translation lookups per call.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django import template

from scheduling.intervals import describe_duration

register = template.Library()

SUMMARY_LENGTH = 80


def _local(moment: datetime, zone: str | ZoneInfo) -> datetime:
    return moment.astimezone(zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone))


def moment_display(moment: datetime, zone_name: str) -> str:
    """Such as Sat 21 Nov 2026, 14:15 CET (Europe/Berlin)."""
    return f"{local_time(moment, zone_name)} ({zone_name})"


@register.filter
def local_time(moment: datetime, zone: str | ZoneInfo) -> str:
    """Such as Mon 23 Nov 2026, 08:00 CET, for a page that names the zone once.

    The abbreviation comes from the aware datetime itself: it tells the two 01:00s of
    a night the clocks go back apart (EDT, EST), where Django's "T" format leaves it out.
    """
    local = _local(moment, zone)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {local.tzname()}"


@register.filter
def in_zone(moment: datetime | None, zone_name: str) -> str:
    return moment_display(moment, zone_name) if moment is not None else ""


@register.filter
def in_zone_precise(moment: datetime | None, zone_name: str) -> str:
    """To the second, without the zone's name, for a column whose heading names it:
    Sat 21 Nov 2026, 14:15:03 CET."""
    if moment is None:
        return ""
    local = _local(moment, zone_name)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M:%S} {local.tzname()}"


@register.filter
def run_duration(duration: timedelta | None) -> str:
    """Such as "0.4 s" for short runs, "2 minutes 5 seconds" for long ones, "" while unknown."""
    if duration is None:
        return ""
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return describe_duration(timedelta(seconds=round(seconds)))


@register.filter
def error_summary(error: str) -> str:
    """The first line of an error, cut to SUMMARY_LENGTH characters with an ellipsis."""
    line = error.strip().split("\n", 1)[0].rstrip()
    if len(line) > SUMMARY_LENGTH or line != error.strip():
        return line[: SUMMARY_LENGTH - 1].rstrip() + "…"
    return line
