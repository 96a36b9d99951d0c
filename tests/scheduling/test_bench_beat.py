"""bench_beat: both schedulers, real beats, one table, and nothing left behind.

`bench_beat --quick` runs every workload at a small size. The test reads its table:
a row per workload and scheduler, and no lost or duplicate slot for the project's
scheduler. Speed is measured by the command, never asserted here.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduling.bench.broker import Arrival, broker_client
from scheduling.bench.figures import tally
from scheduling.bench.rows import Fleet
from scheduling.platform.models import Occurrence, ScheduleChange, ScheduleState
from tests.helpers import run_manage

HEADER = re.compile(r"^workload\s+sched\s+N\s+every\s+start s\s+sent/due\s+lag p50", re.M)
# workload, scheduler, N, every, start, sent/due, p50, p99, max, lost, dup, ... verdict
ROW = re.compile(
    r"^(?P<workload>steady|pickup|herd|failover)\s+(?P<sched>own|stock)\s+(?P<n>[\d,]+)\s+"
    r"(?P<every>\d+|-)\s+(?P<start>[\d.]+|-)\s+(?P<sent>[\d,]+)/(?P<due>[\d,]+)\s+"
    r"(?P<p50>>?[\d.-]+)\s+(?P<p99>>?[\d.-]+)\s+(?P<max>>?[\d.-]+)\s+(?P<lost>[\d,]+|-)\s+"
    r"(?P<dup>[\d,]+|-)\s.*\s(?P<verdict>ok|MISSED|failed|-|\?)$",
    re.M,
)
PICKUP = re.compile(r"^pickup\s+(?P<sched>own|stock)\s+[\d,]+\s.*med [\d.]+, max [\d.]+ s", re.M)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_quick_run_measures_both_schedulers_and_removes_every_bench_row():
    intervals_before = set(IntervalSchedule.objects.values_list("pk", flat=True))

    result = run_manage("bench_beat", "--quick", timeout=150)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert HEADER.search(result.stdout), output
    rows = {(m["workload"], m["sched"]): m for m in ROW.finditer(result.stdout)}
    assert set(rows) == {
        ("steady", "own"),
        ("steady", "stock"),
        ("herd", "own"),
        ("failover", "own"),
    }, output
    for key in (("steady", "own"), ("herd", "own"), ("failover", "own")):
        row = rows[key]
        assert row["sent"] == row["due"] != "0", (key, output)
        assert (row["lost"], row["dup"]) == ("0", "0"), (key, output)
    assert {m["sched"] for m in PICKUP.finditer(result.stdout)} == {"own", "stock"}, output
    assert "scheduling.beat:" in result.stdout and "NominalTimeScheduler" in result.stdout

    assert not PeriodicTask.objects.filter(name__startswith="bench:").exists()
    assert set(IntervalSchedule.objects.values_list("pk", flat=True)) == intervals_before
    assert not ScheduleChange.objects.exists()
    assert not Occurrence.objects.filter(name__startswith="bench:").exists()
    tasks = PeriodicTask.objects.values("pk")
    assert not ScheduleState.objects.exclude(periodic_task_id__in=tasks).exists()
    assert not list(broker_client().scan_iter(match="bench_beat.*"))


@pytest.mark.django_db
def test_it_refuses_bad_sizes_and_writes_nothing():
    result = run_manage("bench_beat", "--sizes", "0", "--quick", timeout=60)

    assert result.returncode != 0
    assert "sizes must be at least 1" in result.stderr
    assert not PeriodicTask.objects.filter(name__startswith="bench:").exists()


# --- The accounting the table rests on (no processes) ---------------------------------------


def _fleet() -> Fleet:
    return Fleet(prefix="bench:t:s:", size=4, every=10, start=1000)


def _own(fleet: Fleet, index: int, slot: int, *, popped: float, task_id: str = "") -> Arrival:
    return Arrival(popped, fleet.name(index), slot, slot, task_id or f"{index}:{slot}", None)


def test_a_fleet_spreads_whole_second_phases_over_the_interval_and_reads_back_its_names():
    fleet = _fleet()

    assert [fleet.anchor(i) for i in range(4)] == [1000, 1002, 1005, 1007]
    assert fleet.name(3) == "bench:t:s:tenant:bench-0000001:digests"
    assert [fleet.index_of(fleet.name(i)) for i in range(4)] == [0, 1, 2, 3]
    assert fleet.index_of("bench:t:s:probe:own:1") is None
    assert fleet.index_of("bench:t:other:tenant:bench-0000000:sync") is None
    assert set(fleet.slots(1001, 1011)) == {(1, 1002), (2, 1005), (3, 1007), (0, 1010)}


def test_it_counts_a_missing_slot_as_lost_and_two_task_ids_for_one_slot_as_a_duplicate():
    fleet = _fleet()
    arrivals = [
        _own(fleet, 1, 1002, popped=1002.5),
        _own(fleet, 2, 1005, popped=1005.2),
        _own(fleet, 2, 1005, popped=1006.0, task_id="another id"),
        _own(fleet, 2, 1005, popped=1006.1, task_id="another id"),  # the same id again
    ]

    counted = tally(fleet, arrivals, 1001, 1011, until=1020.0)

    assert (counted.expected, counted.sent, counted.lost) == (4, 2, 2)
    assert (counted.dup, counted.resent) == (1, 1)
    # Sent: 0.5, 0.2, 1.0, 1.1; lost: slot 1007 and 1010, at least 13 and 10 s late by 1020.
    assert counted.lag(0.5) == (pytest.approx(1.0), False)
    assert counted.lag(0.75) == (pytest.approx(10.0), True)
    assert counted.lag(1.0) == (pytest.approx(13.0), True)


def test_it_puts_a_stock_message_on_the_nearest_slot_and_flags_an_own_slot_off_the_grid():
    fleet = _fleet()
    stock = Arrival(1013.0, fleet.name(0), 1012.9, None, str(uuid.uuid4()), None)
    off_grid = _own(fleet, 1, 1003, popped=1003.1)

    counted = tally(fleet, [stock, off_grid], 1005, 1015, until=1020.0)

    # Task 0's slot 1010: the stock interval counts from the last send, so its nominal
    # time drifts off the grid.
    assert counted.sent == 1
    assert counted.lags == [pytest.approx(0.1)]
    assert counted.off_grid == 1
