"""When schedules fall due, checked against croniter, celery's solar schedule and the tz rules.

DST transitions of 2026 used below, from the tz database's rules:
  - Europe/Berlin: CET (UTC+1) to CEST (UTC+2) on Sun 29 Mar at 01:00 UTC (02:00-02:59
    skipped), and back on Sun 25 Oct at 01:00 UTC (02:00-02:59 happens twice);
  - America/New_York: EST (UTC-5) to EDT (UTC-4) on Sun 8 Mar at 07:00 UTC (02:00-02:59
    skipped), and back on Sun 1 Nov at 06:00 UTC (01:00-01:59 happens twice);
  - Australia/Lord_Howe, a 30-minute shift: LHDT (UTC+11) to LHST (UTC+10:30) on Sun 5 Apr
    at 15:00 UTC on the 4th (01:30-01:59 happens twice), and back to LHDT on Sun 4 Oct at
    15:30 UTC on the 3rd (02:00-02:29 skipped).

croniter (with day_or=False, celery's AND rule for the day fields) differs from the written
rule twice: it runs a repeated wall time twice, and it drops a skipped one unless that is
the day's only time ("7 * * * *" goes from 01:07 to 03:07 in Berlin on 29 Mar, where the
rule runs 02:07 at 03:00). The property test therefore takes croniter's times, drops the
second run of a repeated time, and adds the end of a gap when croniter.match says a wall
minute inside the gap matches; the explicit cases below pin both rules by hand.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import solar as celery_solar
from croniter import croniter
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from scheduling.dispatch.timing import (
    LISTED_CAP,
    Clocked,
    Crontab,
    Interval,
    Schedule,
    ScheduleError,
    Solar,
    jitter_offset,
    next_after,
    slots_due,
    spec_from_periodic_task,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
ZONES = [BERLIN, NEW_YORK, LORD_HOWE, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata")]
# Each zone's two clock changes of 2026: (spring gap, autumn repeat) in its own hemisphere.
CHANGES = {
    BERLIN: [datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)],
    NEW_YORK: [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)],
    LORD_HOWE: [datetime(2026, 10, 3, 15, 30, tzinfo=UTC), datetime(2026, 4, 4, 15, tzinfo=UTC)],
}
SEEN = datetime(2025, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ONE_SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cron(
    expression: str, zone: ZoneInfo | str = "UTC", *, first_seen: datetime = SEEN, **bounds
) -> Schedule:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    rule = Crontab.from_fields(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        zone=zone,
    )
    return Schedule(rule=rule, first_seen=first_seen, **bounds)


def every(seconds: int, anchor: datetime, **bounds) -> Schedule:
    """An interval first seen at its anchor."""
    rule = Interval(every=timedelta(seconds=seconds), anchor=anchor)
    return Schedule(rule=rule, first_seen=anchor, **bounds)


def successive(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    times = []
    for _ in range(count):
        after = next_after(schedule, after)
        times.append(after)
    return times


# --- crontab against croniter ---------------------------------------------------------


def _random_field(rng: random.Random, low: int, high: int) -> str:
    def value() -> int:
        return rng.randint(low, high)

    kind = rng.choice(["star", "value", "list", "range", "range_step", "star_step"])
    if kind == "star":
        return "*"
    if kind == "value":
        return str(value())
    if kind == "list":
        return ",".join(str(v) for v in sorted({value() for _ in range(rng.randint(2, 4))}))
    # croniter reads a one-value range with a step ("6-6/4") as "6/4"; celery as "6".
    start = rng.randint(low, high - 1)
    end = rng.randint(start + 1, high)
    if kind == "range":
        return f"{start}-{end}"
    if kind == "range_step":
        return f"{start}-{end}/{rng.randint(1, 5)}"
    return f"*/{rng.randint(2, 20)}"


def _random_expression(rng: random.Random) -> str:
    fields = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    # Keep most fields open, so slots are near enough to meet the DST hours often.
    return " ".join(
        _random_field(rng, low, high) if rng.random() < 0.45 else "*" for low, high in fields
    )


def _second_run_of_a_repeated_time(moment: datetime, zone: ZoneInfo) -> bool:
    local = moment.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def _gap_runs(expression: str, zone: ZoneInfo, after: datetime) -> list[datetime]:
    """The end of each spring gap after `after` in which some skipped wall minute matches."""
    runs = []
    for gap_end in CHANGES.get(zone, [])[:1]:
        first_skipped = (gap_end - ONE_SECOND).astimezone(zone).replace(tzinfo=None) + ONE_SECOND
        first_valid = gap_end.astimezone(zone).replace(tzinfo=None)
        skipped = range(int((first_valid - first_skipped) / MINUTE))
        walls = (first_skipped + minutes * MINUTE for minutes in skipped)
        if gap_end > after and any(croniter.match(expression, w, day_or=False) for w in walls):
            runs.append(gap_end)
    return runs


def _croniter_by_the_rule(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    """croniter's next time, passing over the second run of a repeated wall time, or the end
    of a gap before it that has a matching skipped minute."""
    times = croniter(expression, after.astimezone(zone), day_or=False)
    moment = times.get_next(datetime)
    while _second_run_of_a_repeated_time(moment, zone):
        moment = times.get_next(datetime)
    return min([moment.astimezone(UTC), *_gap_runs(expression, zone, after)])


def test_crontab_agrees_with_croniter_across_zones_and_both_dst_changes():
    rng = random.Random(20260329)
    compared = 0
    while compared < 600:
        expression = _random_expression(rng)
        # Half the instants in the hours before one of a zone's clock changes, half anywhere.
        if rng.random() < 0.5:
            zone = rng.choice(list(CHANGES))
            after = rng.choice(CHANGES[zone]) - timedelta(seconds=rng.randint(0, 3 * 3600))
        else:
            zone = rng.choice(ZONES)
            after = utc(2026, 1, 1) + timedelta(seconds=rng.randint(0, 365 * 86400))
        try:
            schedule = cron(expression, zone)
        except ScheduleError:  # a day the months never have, such as 31 in February
            continue
        for _ in range(4):
            expected = _croniter_by_the_rule(expression, zone, after)
            assert next_after(schedule, after) == expected, (expression, zone, after)
            after = expected
        compared += 1


def test_every_fifteen_minutes_matches_croniter_minute_by_minute_over_the_dst_nights():
    for zone, change in [(z, change) for z, changes in CHANGES.items() for change in changes]:
        schedule = cron("*/15 * * * *", zone)
        after = change - timedelta(hours=3)
        while after < change + timedelta(hours=3):
            assert next_after(schedule, after) == _croniter_by_the_rule(
                "*/15 * * * *", zone, after
            ), (zone, after)
            after += timedelta(minutes=7)


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Berlin 29 Mar: 02:30 does not exist; the gap ends at 03:00 CEST = 01:00 UTC.
        ("30 2 * * *", BERLIN, utc(2026, 3, 28, 3), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
        # New York 8 Mar: the gap ends at 03:00 EDT = 07:00 UTC; 02:30 EDT the next day.
        ("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
        # Lord Howe 4 Oct: 02:15 does not exist; the gap ends at 02:30 LHDT = 15:30 UTC on the
        # 3rd; then 02:15 LHDT (UTC+11) = 15:15 UTC.
        (
            "15 2 * * *",
            LORD_HOWE,
            utc(2026, 10, 3, 3),
            [utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)],
        ),
        # Hourly at :07 in Berlin: 02:07 is skipped and runs at 03:00 CEST, then 03:07 CEST.
        # (croniter goes straight from 01:07 CET to 03:07 CEST.)
        (
            "7 * * * *",
            BERLIN,
            utc(2026, 3, 29, 0, 7),
            [utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 7)],
        ),
        # Berlin: 02:00, 02:15, 02:30, 02:45 and 03:00 all fall at 03:00 CEST, once.
        (
            "*/15 * * * *",
            BERLIN,
            utc(2026, 3, 29, 0, 50),
            [utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)],
        ),
    ],
)
def test_a_skipped_wall_time_runs_once_at_the_first_instant_after_the_gap(
    expression, zone, after, expected
):
    assert successive(cron(expression, zone), after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Berlin 25 Oct: 02:30 CEST = 00:30 UTC runs; 02:30 CET = 01:30 UTC does not.
        # croniter: 00:30, 01:30, then 01:30 on the 26th.
        (
            "30 2 * * *",
            BERLIN,
            utc(2026, 10, 24, 3),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # New York 1 Nov: 01:30 EDT = 05:30 UTC runs, 01:30 EST = 06:30 UTC does not.
        (
            "30 1 * * *",
            NEW_YORK,
            utc(2026, 10, 31, 12),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
        # Lord Howe 5 Apr: 01:45 LHDT (UTC+11) = 14:45 UTC on the 4th runs, 01:45 LHST
        # (UTC+10:30) = 15:15 UTC does not; the next is 01:45 LHST on the 6th.
        (
            "45 1 * * *",
            LORD_HOWE,
            utc(2026, 4, 4, 3),
            [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)],
        ),
        # Every 15 minutes in Berlin: the repeated hour runs in its first pass only, so
        # after 02:45 CEST (00:45 UTC) the next run is 03:00 CET (02:00 UTC).
        (
            "*/15 * * * *",
            BERLIN,
            utc(2026, 10, 25, 0, 40),
            [utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 2), utc(2026, 10, 25, 2, 15)],
        ),
        # Asked from inside the second pass (02:10 CET = 01:10 UTC): nothing until 03:00 CET.
        ("*/15 * * * *", BERLIN, utc(2026, 10, 25, 1, 10), [utc(2026, 10, 25, 2)]),
    ],
)
def test_a_repeated_wall_time_runs_once_at_its_first_occurrence(expression, zone, after, expected):
    assert successive(cron(expression, zone), after, len(expected)) == expected


def test_crontab_days_must_match_all_day_fields_as_in_celery():
    # Friday the 13th: celery ANDs the day fields. 2 Jan 2026 is a Friday (Vixie cron's OR
    # would run then); 13 Feb 2026 is the first Friday the 13th.
    assert next_after(cron("0 12 13 * 5"), utc(2026, 1, 1)) == utc(2026, 2, 13, 12)


def test_crontab_takes_celerys_names_and_wrapping_ranges():
    # celery reads "fri-mon" as Fri, Sat, Sun, Mon. 3 Mar 2026 is a Tuesday.
    schedule = cron("0 9 * * fri-mon")

    assert successive(schedule, utc(2026, 3, 3), 4) == [
        utc(2026, 3, 6, 9),
        utc(2026, 3, 7, 9),
        utc(2026, 3, 8, 9),
        utc(2026, 3, 9, 9),
    ]
    assert next_after(cron("0 0 1 jan,jul *"), utc(2026, 2, 1)) == utc(2026, 7, 1)


def test_a_rare_crontab_is_found_years_ahead_by_skipping_whole_months():
    # 29 February on a Monday: the next is 2044. A minute-by-minute search would take
    # nine million steps; the day search visits Februaries only.
    assert next_after(cron("0 0 29 2 1"), utc(2026, 1, 1)) == utc(2044, 2, 29)


@pytest.mark.parametrize(
    "fields",
    [
        {"minute": "60"},
        {"hour": "*/0"},
        {"day_of_month": "31", "month_of_year": "2"},
        {"day_of_week": "7"},
        {"minute": "five"},
        {"zone": "Mars/Olympus_Mons"},
    ],
)
def test_a_crontab_celery_refuses_is_refused_with_a_clear_error(fields):
    with pytest.raises(ScheduleError):
        Crontab.from_fields(**fields)


# --- interval, start_time, expires, one-off, clocked ----------------------------------


def test_an_interval_is_a_fixed_grid_on_its_start_time():
    schedule = every(60, utc(2026, 5, 1, 10), start_time=utc(2026, 5, 1, 10))

    assert next_after(schedule, utc(2026, 5, 1, 9)) == utc(2026, 5, 1, 10)  # start_time itself
    assert next_after(schedule, utc(2026, 5, 1, 10, 5, 30)) == utc(2026, 5, 1, 10, 6)
    # A late tick does not move the grid: the slot after 10:06 is 10:07, however late it ran.
    assert next_after(schedule, utc(2026, 5, 1, 10, 6)) == utc(2026, 5, 1, 10, 7)


def test_an_interval_without_start_time_first_runs_one_interval_after_it_was_seen():
    seen = datetime(2026, 5, 1, 10, 0, 0, 400_000, tzinfo=UTC)  # rounded up to 10:00:01
    schedule = every(300, seen)

    assert successive(schedule, seen - timedelta(days=1), 2) == [
        utc(2026, 5, 1, 10, 5, 1),
        utc(2026, 5, 1, 10, 10, 1),
    ]


@pytest.mark.parametrize("period", [timedelta(microseconds=500), timedelta(seconds=1.5)])
def test_an_interval_of_no_whole_seconds_is_refused(period):
    with pytest.raises(ScheduleError):
        Interval(every=period, anchor=utc(2026, 1, 1))


def test_nothing_runs_before_start_time_nor_at_or_after_expires():
    schedule = cron("0 * * * *", start_time=utc(2026, 5, 1, 9, 30), expires=utc(2026, 5, 1, 12))

    assert next_after(schedule, utc(2026, 4, 1)) == utc(2026, 5, 1, 10)
    assert next_after(schedule, utc(2026, 5, 1, 10)) == utc(2026, 5, 1, 11)
    assert next_after(schedule, utc(2026, 5, 1, 11)) is None  # 12:00 is the expiry itself


def test_a_one_off_schedule_has_only_its_first_slot():
    schedule = cron("0 * * * *", first_seen=utc(2026, 5, 1, 9, 30), one_off=True)

    assert next_after(schedule, utc(2026, 5, 1, 9, 30)) == utc(2026, 5, 1, 10)
    assert next_after(schedule, utc(2026, 5, 1, 10)) is None


def test_a_clocked_schedule_runs_at_its_time_once():
    at = datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    schedule = Schedule(rule=Clocked(at=at), first_seen=utc(2026, 5, 2), one_off=True)

    # Seen after its time, it is still its one slot (catch-up decides whether it runs).
    assert next_after(schedule, utc(2026, 4, 1)) == utc(2026, 5, 1, 10, 0, 1)
    assert next_after(schedule, utc(2026, 5, 1, 10, 0, 1)) is None


def test_a_time_without_a_zone_is_refused():
    with pytest.raises(ScheduleError):
        next_after(cron("* * * * *"), datetime(2026, 5, 1))  # noqa: DTZ001


# --- solar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "latitude", "longitude"),
    [
        ("sunrise", 52.52, 13.405),
        ("sunset", 40.7128, -74.006),
        ("solar_noon", -31.5, 159.08),
        ("dusk_astronomical", 52.52, 13.405),
        ("sunrise", 69.65, 18.96),  # Tromsø: no sunrise from late November to mid January
    ],
)
def test_solar_times_are_celerys_next_event_rounded_up_to_the_second(event, latitude, longitude):
    schedule = Schedule(rule=Solar(event, latitude, longitude), first_seen=SEEN)
    for day in range(0, 360, 45):
        start = utc(2026, 1, 2, 12) + timedelta(days=day)
        reference = celery_solar(event, latitude, longitude, nowfun=lambda start=start: start)
        expected = start + reference.remaining_estimate(start)

        assert timedelta(0) <= next_after(schedule, start) - expected < timedelta(seconds=1)


def test_sunrise_in_berlin_on_midsummer_morning_is_at_0443_local():
    # The almanac: sunrise in Berlin on 21 June 2026 is at 04:43 CEST (02:43 UTC).
    schedule = Schedule(rule=Solar("sunrise", 52.52, 13.405), first_seen=SEEN)

    sunrise = next_after(schedule, utc(2026, 6, 20, 12))

    assert abs(sunrise - utc(2026, 6, 21, 2, 43)) < timedelta(minutes=1)
    assert next_after(schedule, sunrise).date() == utc(2026, 6, 22).date()


def test_a_solar_event_celery_does_not_know_is_refused():
    with pytest.raises(ScheduleError):
        Solar("moonrise", 52.52, 13.405)


# --- from the django-celery-beat rows -------------------------------------------------


def _task(name: str, **schedule) -> PeriodicTask:
    return PeriodicTask.objects.create(name=name, task="scheduling.tasks.heartbeat", **schedule)


@pytest.mark.django_db
def test_each_kind_of_row_becomes_its_schedule():
    seen = utc(2026, 5, 1, 10)
    interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.HOURS)
    crontab = CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Berlin")
    solar = SolarSchedule.objects.create(event="sunrise", latitude=52.52, longitude=13.405)
    clocked = ClockedSchedule.objects.create(clocked_time=utc(2026, 6, 1, 8))
    _task("interval", interval=interval, expires=utc(2026, 5, 1, 13))
    _task("crontab", crontab=crontab)
    _task("solar", solar=solar)
    _task("clocked", clocked=clocked, one_off=True)
    rows = PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked")
    spec = {
        name: spec_from_periodic_task(rows.get(name=name), first_seen=seen)
        for name in ("interval", "crontab", "solar", "clocked")
    }
    sunrise_in_berlin = Schedule(rule=Solar("sunrise", 52.52, 13.405), first_seen=seen)

    # Every 2 hours from first seen, and 14:00 is past the expiry.
    assert successive(spec["interval"], seen, 2) == [utc(2026, 5, 1, 12), None]
    # 02:30 in Berlin, in its own zone: 00:30 UTC in summer.
    assert next_after(spec["crontab"], seen) == utc(2026, 5, 2, 0, 30)
    assert next_after(spec["solar"], seen) == next_after(sunrise_in_berlin, seen)
    assert successive(spec["clocked"], seen, 2) == [utc(2026, 6, 1, 8), None]


@pytest.mark.django_db
def test_an_interval_row_with_start_time_is_anchored_there_not_at_first_seen():
    interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    row = _task("anchored", interval=interval, start_time=utc(2026, 5, 1, 10, 3))

    spec = spec_from_periodic_task(row, first_seen=utc(2026, 5, 1, 11, 7))

    assert next_after(spec, utc(2026, 5, 1, 11, 7)) == utc(2026, 5, 1, 11, 13)


def test_a_row_without_a_schedule_is_refused():
    row = PeriodicTask(name="nothing", task="scheduling.tasks.heartbeat")

    with pytest.raises(ScheduleError):
        spec_from_periodic_task(row, first_seen=SEEN)


# --- jitter ---------------------------------------------------------------------------


def test_jitter_is_fixed_for_a_name_in_every_process():
    # A change of hash would move every schedule's sends; this value pins SHA-256.
    assert jitter_offset("tenant:acme:sync", 300) == 241
    assert jitter_offset("tenant:acme:sync", 300) == jitter_offset("tenant:acme:sync", 300)


def test_jitter_stays_within_its_bound_and_spreads_schedules_over_it():
    offsets = [jitter_offset(f"tenant:t{i}:sync", 60) for i in range(2000)]

    assert all(0 <= offset < 60 for offset in offsets)
    assert len(set(offsets)) == 60


def test_a_jitter_bound_of_zero_means_none_and_a_negative_one_is_refused():
    assert jitter_offset("tenant:acme:sync", 0) == 0
    with pytest.raises(ValueError):
        jitter_offset("tenant:acme:sync", -1)


# --- catch-up -------------------------------------------------------------------------

START = utc(2026, 5, 1, 10)


def per_minute() -> Schedule:
    return every(60, START, start_time=START)


def test_only_the_latest_slot_inside_the_window_runs():
    slots = slots_due(
        per_minute(),
        START,
        utc(2026, 5, 1, 10, 5, 30),
        catchup_window=timedelta(hours=1),
        run_all=False,
        limit=10,
    )

    assert slots.run == (utc(2026, 5, 1, 10, 5),)
    assert slots.coalesced.listed == tuple(utc(2026, 5, 1, 10, m) for m in range(1, 5))
    assert slots.missed.count == 0
    assert (slots.last_nominal, slots.next_nominal) == (
        utc(2026, 5, 1, 10, 5),
        utc(2026, 5, 1, 10, 6),
    )


def test_slots_older_than_the_window_are_missed_and_one_at_its_edge_is_not():
    slots = slots_due(
        per_minute(),
        START,
        utc(2026, 5, 1, 10, 5),
        catchup_window=timedelta(minutes=2),
        run_all=False,
        limit=10,
    )

    assert slots.missed.listed == (utc(2026, 5, 1, 10, 1), utc(2026, 5, 1, 10, 2))
    assert slots.coalesced.listed == (utc(2026, 5, 1, 10, 3), utc(2026, 5, 1, 10, 4))
    assert slots.run == (utc(2026, 5, 1, 10, 5),)


def test_run_all_runs_every_slot_once_across_calls_limited_per_call():
    now = utc(2026, 5, 1, 10, 7)
    last, seen = START, []
    while True:
        slots = slots_due(
            per_minute(), last, now, catchup_window=timedelta(hours=1), run_all=True, limit=3
        )
        assert len(slots.run) <= 3
        seen.extend(slots.run)
        last = slots.last_nominal
        if slots.next_nominal > now:
            break

    assert seen == [utc(2026, 5, 1, 10, m) for m in range(1, 8)]
    assert slots.next_nominal == utc(2026, 5, 1, 10, 8)


def test_a_schedule_not_yet_due_owes_nothing():
    slots = slots_due(
        per_minute(),
        utc(2026, 5, 1, 10, 5),
        utc(2026, 5, 1, 10, 5, 59),
        catchup_window=timedelta(hours=1),
        run_all=False,
        limit=10,
    )

    assert slots.run == ()
    assert (slots.last_nominal, slots.next_nominal) == (
        utc(2026, 5, 1, 10, 5),
        utc(2026, 5, 1, 10, 6),
    )


def test_a_month_down_for_a_per_second_schedule_is_counted_not_listed():
    schedule = every(1, START, start_time=START)
    now = START + timedelta(days=30)

    slots = slots_due(
        schedule, START, now, catchup_window=timedelta(minutes=1), run_all=False, limit=10
    )

    # Missed: every second from START + 1 s to now - 61 s; the 61 seconds of the window
    # from now - 60 s to now run the latest and pass over 60.
    assert slots.missed.count == 30 * 86400 - 61
    assert slots.missed.first == START + timedelta(seconds=1)
    assert slots.missed.last == now - timedelta(seconds=61)
    assert slots.missed.listed == ()
    assert slots.coalesced.count == 60
    assert slots.run == (now,)


def test_a_year_down_for_a_per_minute_crontab_is_counted_day_by_day_across_dst():
    # 2026 in Berlin has 365 * 1440 wall minutes; the 60 skipped on 29 Mar all run at 03:00,
    # which is a slot of its own, so 60 fewer slots; the repeated hour of 25 Oct runs once.
    schedule = cron("* * * * *", BERLIN)
    start, end = datetime(2026, 1, 1, tzinfo=BERLIN), datetime(2027, 1, 1, tzinfo=BERLIN)

    with mock.patch.object(
        Crontab, "next_after", autospec=True, side_effect=Crontab.next_after
    ) as stepped:
        slots = slots_due(
            schedule,
            start - timedelta(microseconds=1),
            end - MINUTE,
            catchup_window=timedelta(0),
            run_all=False,
            limit=10,
        )

    assert slots.missed.count + len(slots.run) == 365 * 1440 - 60
    assert slots.missed.first == start
    assert slots.run == (end - MINUTE,)
    # One stride a day, slot by slot only up to each of the two clock changes (02:00 and
    # 03:00 at the latest): not half a million minutes.
    assert stepped.call_count < 365 + 2 * 180 + 10


def test_counting_in_strides_agrees_with_stepping_one_slot_at_a_time():
    for expression, zone, around in [
        ("*/5 * * * *", BERLIN, CHANGES[BERLIN][0]),
        ("*/5 * * * *", BERLIN, CHANGES[BERLIN][1]),
        ("0,30 * * * *", LORD_HOWE, CHANGES[LORD_HOWE][1]),
        ("0,30 * * * *", LORD_HOWE, CHANGES[LORD_HOWE][0]),
        ("15 */2 * * *", NEW_YORK, CHANGES[NEW_YORK][1]),
    ]:
        schedule = cron(expression, zone)
        # `high` is no slot, so with no catch-up window every slot up to it is missed.
        low, high = around - timedelta(days=3), around + timedelta(days=3, seconds=7)
        stepped, cursor = [], low
        while (cursor := next_after(schedule, cursor)) <= high:
            stepped.append(cursor)

        slots = slots_due(schedule, low, high, catchup_window=timedelta(0), run_all=False, limit=1)

        assert slots.run == ()
        assert (slots.missed.count, slots.missed.first, slots.missed.last) == (
            len(stepped),
            stepped[0],
            stepped[-1],
        )


def test_a_clocked_time_missed_beyond_the_window_is_recorded_and_never_comes_back():
    schedule = Schedule(rule=Clocked(at=START), first_seen=START + timedelta(hours=2), one_off=True)

    slots = slots_due(
        schedule,
        None,
        START + timedelta(hours=2),
        catchup_window=timedelta(hours=1),
        run_all=False,
        limit=10,
    )

    assert slots.missed.listed == (START,)
    assert slots.run == ()
    assert (slots.last_nominal, slots.next_nominal) == (START, None)


def test_a_clocked_time_seen_late_but_inside_the_window_runs():
    schedule = Schedule(
        rule=Clocked(at=START), first_seen=START + timedelta(seconds=5), one_off=True
    )

    slots = slots_due(
        schedule,
        None,
        START + timedelta(seconds=5),
        catchup_window=timedelta(hours=1),
        run_all=False,
        limit=10,
    )

    assert slots.run == (START,)
    assert slots.next_nominal is None


def test_missed_slots_past_the_cap_are_told_by_count_and_ends():
    slots = slots_due(
        per_minute(),
        START,
        START + timedelta(minutes=LISTED_CAP + 12),
        catchup_window=timedelta(minutes=10),
        run_all=False,
        limit=10,
    )

    assert slots.missed.count == LISTED_CAP + 1
    assert slots.missed.listed == ()
    assert (slots.missed.first, slots.missed.last) == (
        START + MINUTE,
        START + (LISTED_CAP + 1) * MINUTE,
    )


def test_slots_stop_at_expires():
    schedule = every(60, START, start_time=START, expires=utc(2026, 5, 1, 10, 3))

    slots = slots_due(
        schedule,
        START,
        utc(2026, 5, 1, 11),
        catchup_window=timedelta(hours=1),
        run_all=True,
        limit=10,
    )

    assert slots.run == (START + MINUTE, START + 2 * MINUTE)
    assert slots.next_nominal is None
