"""Intervals written the way people write them: "90s", "15m", "1h30m", "2d", "1w"."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NAMES = {"w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second"}
_PART = re.compile(r"(\d+)\s*([wdhms])")
_WHOLE = re.compile(r"^(?:\s*\d+\s*[wdhms])+\s*$")


class IntervalSyntaxError(ValueError):
    pass


def parse_interval(text: str) -> timedelta:
    """Parse "15m", "1h30m" or a bare number of seconds into a positive timedelta."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    elif _WHOLE.match(value):
        seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    else:
        raise IntervalSyntaxError(
            f"{text!r} is not an interval; use a number with a unit, such as 90s, 15m, 1h30m or 2d."
        )
    if seconds <= 0:
        raise IntervalSyntaxError("An interval must be longer than zero seconds.")
    return timedelta(seconds=seconds)


def _split(interval: timedelta) -> list[tuple[int, str]]:
    remaining = int(interval.total_seconds())
    parts = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append((count, unit))
    return parts


def format_interval(interval: timedelta) -> str:
    """The compact form that parse_interval reads back: 5400 s -> "1h30m"."""
    return "".join(f"{count}{unit}" for count, unit in _split(interval)) or "0s"


def describe_duration(interval: timedelta) -> str:
    """Human words: 5400 s -> "1 hour 30 minutes"."""
    words = [
        f"{count} {_NAMES[unit]}{'s' if count != 1 else ''}" for count, unit in _split(interval)
    ]
    return " ".join(words) or "0 seconds"


def describe_interval(interval: timedelta) -> str:
    """Human words: 900 s -> "every 15 minutes", 3600 s -> "every hour"."""
    parts = _split(interval)
    if len(parts) == 1 and parts[0][0] == 1:
        return f"every {_NAMES[parts[0][1]]}"
    return f"every {describe_duration(interval)}"
