"""The figures of a run, and the one table that shows them side by side.

A fleet's tasks run on a grid (rows.Fleet), so what a window owes is known: every
(task, slot) with the slot inside it. What beat sent is read back from Redis. The
project's scheduler names each message's slot (the `occurrence` header); the stock one
counts an interval from the last send, not on a grid, so each of its messages is put on
the grid slot nearest its `nominal_time`. Then:

  lost     a slot of the window that no message stands for, by the end of the grace;
  dup      a slot with messages of more than one task id: it would run more than once;
  resent   another copy of a message, with the same task id (published again after a
           takeover): the worker's duplicate guard runs it once;
  lag      pop time minus `nominal_time`, over the window's slots. A lost slot counts as
           a lag of at least the time from its nominal time to the end of collection, so a
           scheduler that falls behind shows how far; a percentile that such a slot
           reaches is a lower bound, marked ">".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from scheduling.bench.broker import Arrival
from scheduling.bench.rows import Fleet


@dataclass
class Tally:
    expected: int = 0
    sent: int = 0  # slots with at least one message
    dup: int = 0
    resent: int = 0
    off_grid: int = 0  # messages naming a slot that is not on their task's grid
    lags: list[float] = field(default_factory=list)
    unsent: list[float] = field(default_factory=list)  # lower bounds of the lost slots' lags

    @property
    def lost(self) -> int:
        return self.expected - self.sent

    def lag(self, fraction: float) -> Lag | None:
        """Nearest-rank percentile over sent and lost slots."""
        ordered = sorted([Lag(v, False) for v in self.lags] + [Lag(v, True) for v in self.unsent])
        if not ordered:
            return None
        rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return Lag(ordered[rank].seconds, any(lag.at_least for lag in ordered[: rank + 1]))


class Lag(NamedTuple):
    seconds: float
    at_least: bool  # a lost slot ranks at or below: the true value may be higher


def tally(
    fleet: Fleet,
    arrivals: Iterable[Arrival],
    low: float,
    high: float,
    *,
    until: float,
    jitter: int = 0,
) -> Tally:
    """What the fleet owed for slots in [low, high) against what arrived by `until`; a
    lost slot was due by its slot plus at most `jitter` seconds."""
    result = Tally()
    copies: dict[tuple[int, int], dict[str, int]] = {}
    for arrival in arrivals:
        index = fleet.index_of(arrival.name)
        if index is None or arrival.nominal is None:
            continue
        if arrival.slot is None:
            slot = fleet.nearest_slot(index, arrival.nominal)
        else:
            slot = round(arrival.slot)
            if (slot - fleet.anchor(index)) % fleet.every:
                result.off_grid += 1
                continue
        if low <= slot < high:
            ids = copies.setdefault((index, slot), {})
            ids[arrival.task_id] = ids.get(arrival.task_id, 0) + 1
            result.lags.append(arrival.stamp - arrival.nominal)
    owed = set(fleet.slots(low, high))
    result.expected = len(owed)
    result.sent = len(owed & copies.keys())
    result.unsent = [until - slot - jitter for _index, slot in owed - copies.keys()]
    result.off_grid += len(copies.keys() - owed)
    for ids in copies.values():
        result.dup += len(ids) - 1
        result.resent += sum(ids.values()) - len(ids)
    return result


@dataclass
class Target:
    label: str
    met: bool | None  # None: not measured


@dataclass
class Row:
    workload: str  # steady, herd, pickup, failover
    scheduler: str  # stock, own
    size: int
    every: int | None = None
    start_s: float | None = None  # own: warm-up; stock: spawn to first message
    tally: Tally | None = None
    cpu_s: float | None = None
    db_cpu_s: float | None = None
    rss_mib: float | None = None
    figure: str = ""
    targets: list[Target] = field(default_factory=list)
    failed: bool = False
    notes: list[str] = field(default_factory=list)

    def exact_once(self) -> Target:
        t = self.tally
        met = None if t is None else t.lost == 0 and t.dup == 0 and t.off_grid == 0
        return Target("0 lost/dup", met)

    @property
    def verdict(self) -> str:
        if self.failed:
            return "failed"
        if not self.targets:
            return "-"
        if any(target.met is False for target in self.targets):
            return "MISSED"
        return "ok" if all(target.met for target in self.targets) else "?"


def _seconds(value: Lag | None) -> str:
    if value is None:
        return "-"
    text = f"{value.seconds:.3f}" if abs(value.seconds) < 10 else f"{value.seconds:.1f}"
    return (">" if value.at_least else "") + text


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    ("workload", 9, "<"),
    ("sched", 6, "<"),
    ("N", 10, ">"),
    ("every", 6, ">"),
    ("start s", 8, ">"),
    ("sent/due", 16, ">"),
    ("lag p50", 8, ">"),
    ("p99", 8, ">"),
    ("max", 8, ">"),
    ("lost", 7, ">"),
    ("dup", 5, ">"),
    ("CPU s", 7, ">"),
    ("db s", 7, ">"),
    ("RSS MiB", 8, ">"),
    ("figure", 24, ">"),
    ("target", 26, ">"),
    ("verdict", 8, ">"),
)


def _cells(row: Row) -> tuple[str, ...]:
    t = row.tally
    return (
        row.workload,
        row.scheduler,
        f"{row.size:,}",
        "-" if row.every is None else str(row.every),
        _number(row.start_s),
        "-" if t is None else f"{t.sent:,}/{t.expected:,}",
        _seconds(t and t.lag(0.5)),
        _seconds(t and t.lag(0.99)),
        _seconds(t and t.lag(1.0)),
        "-" if t is None else f"{t.lost:,}",
        "-" if t is None else f"{t.dup:,}",
        _number(row.cpu_s),
        _number(row.db_cpu_s),
        _number(row.rss_mib),
        row.figure or "-",
        ", ".join(target.label for target in row.targets) or "-",
        row.verdict,
    )


def _line(cells: Iterable[str]) -> str:
    return " ".join(
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def table(rows: list[Row]) -> str:
    lines = [_line(name for name, _, _ in COLUMNS)]
    lines += [_line(_cells(row)) for row in rows]
    return "\n".join(lines)


def notes(rows: list[Row]) -> str:
    return "\n".join(
        f"  {row.workload} {row.scheduler} N={row.size:,}: {note}"
        for row in rows
        for note in row.notes
    )
