"""Due times across DST, checked against the published IANA rules, not against the code.

The reference instants below were worked out by hand from the tz database's rules:
  - Europe/Berlin, 2026: CET (UTC+1) to CEST (UTC+2) on Sun 29 Mar at 01:00 UTC,
    and back on Sun 25 Oct at 01:00 UTC;
  - America/New_York, 2026: EST (UTC-5) to EDT (UTC-4) on Sun 8 Mar at 07:00 UTC,
    and back on Sun 1 Nov at 06:00 UTC;
  - Asia/Kolkata: UTC+5:30 all year.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduling.recurrence import next_due

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # Berlin, spring: 09:00 CET is 08:00 UTC, 09:00 CEST is 07:00 UTC.
        (BERLIN, utc(2026, 3, 28, 7, 0), utc(2026, 3, 28, 8, 0)),
        (BERLIN, utc(2026, 3, 28, 8, 30), utc(2026, 3, 29, 7, 0)),
        (BERLIN, utc(2026, 3, 29, 7, 0), utc(2026, 3, 30, 7, 0)),
        # Berlin, autumn: back to 08:00 UTC on the day of the change.
        (BERLIN, utc(2026, 10, 24, 7, 30), utc(2026, 10, 25, 8, 0)),
        # New York, spring: 09:00 EST is 14:00 UTC, 09:00 EDT is 13:00 UTC.
        (NEW_YORK, utc(2026, 3, 7, 15, 0), utc(2026, 3, 8, 13, 0)),
        # New York, autumn.
        (NEW_YORK, utc(2026, 10, 31, 14, 0), utc(2026, 11, 1, 14, 0)),
        (NEW_YORK, utc(2026, 11, 1, 14, 0), utc(2026, 11, 2, 14, 0)),
    ],
)
def test_daily_at_nine_keeps_local_time_across_dst(zone, after, expected):
    assert next_due(frequency="daily", hour=9, zone=zone, after=after) == expected


def test_a_time_skipped_in_spring_runs_just_after_the_gap():
    # 02:00 does not exist in Berlin on 29 Mar 2026; the first valid time after it is 03:00 CEST.
    assert next_due(frequency="daily", hour=2, zone=BERLIN, after=utc(2026, 3, 28, 2)) == utc(
        2026, 3, 29, 1, 0
    )


def test_a_time_repeated_in_autumn_runs_once():
    # 02:00 happens twice in Berlin on 25 Oct 2026: 00:00 UTC (CEST) and 01:00 UTC (CET).
    first = next_due(frequency="daily", hour=2, zone=BERLIN, after=utc(2026, 10, 24, 12))
    again = next_due(frequency="daily", hour=2, zone=BERLIN, after=first)

    assert first == utc(2026, 10, 25, 0, 0)
    assert again == utc(2026, 10, 26, 1, 0)  # 02:00 CET the next day, not the repeat


@pytest.mark.parametrize(
    ("zone", "weekday", "after", "expected"),
    [
        # Monday 09:00 in Berlin, the Friday before the spring change: CEST by then.
        (BERLIN, 0, utc(2026, 3, 27, 12), utc(2026, 3, 30, 7, 0)),
        # Sunday 09:00 in New York, a week before the autumn change: EST by then.
        (NEW_YORK, 6, utc(2026, 10, 25, 14), utc(2026, 11, 1, 14, 0)),
        # Sunday 09:00 in New York when it is Sunday 08:00 there: later the same day.
        (NEW_YORK, 6, utc(2026, 11, 1, 13, 30), utc(2026, 11, 1, 14, 0)),
    ],
)
def test_weekly_lands_on_the_weekday_in_local_time(zone, weekday, after, expected):
    due = next_due(frequency="weekly", hour=9, weekday=weekday, zone=zone, after=after)

    assert due == expected


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # Berlin, autumn: 02:30 CEST, then 02:00 CET (the repeated hour counts), then 03:00 CET.
        (BERLIN, utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0)),
        (BERLIN, utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 2, 0)),
        # New York, spring: 01:30 EST, then 03:00 EDT (02:00 does not exist).
        (NEW_YORK, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0)),
        # Kolkata's hours start at half past in UTC.
        (ZoneInfo("Asia/Kolkata"), utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 30)),
    ],
)
def test_hourly_runs_at_each_local_top_of_the_hour(zone, after, expected):
    assert next_due(frequency="hourly", zone=zone, after=after) == expected


def test_off_is_never_due():
    assert next_due(frequency="off", zone=BERLIN, after=utc(2026, 1, 1)) is None


def test_an_incomplete_rule_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="needs an hour"):
        next_due(frequency="weekly", hour=9, zone=BERLIN, after=utc(2026, 1, 1))
