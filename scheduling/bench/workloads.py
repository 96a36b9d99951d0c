"""The workloads of bench_beat: steady, change pickup, herd and failover.

Each runs real `celery beat` processes against the bench rows, reads what they publish
(scheduling.bench.broker) and returns rows of the table (scheduling.bench.figures).
Every wait is bounded by the run's budget: a scheduler that can't keep up is reported,
never waited for.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from scheduling.bench.broker import Arrival, QueueReader, broker_client, queue_purge
from scheduling.bench.figures import Lag, Row, Target, tally
from scheduling.bench.processes import BeatProcess, backend_cpu, backend_cpu_spent
from scheduling.bench.rows import (
    PROBE_EVERY,
    Fleet,
    changes_pending,
    fleet_arm_stock,
    fleet_create,
    probe_create,
    rows_delete,
    tables_vacuum,
)

STOCK = "scheduling.beat:NominalTimeScheduler"
OWN = "scheduling.dispatch.scheduler:DueTimeScheduler"
LABEL = {STOCK: "stock", OWN: "own"}

BEAT_STARTUP = 3.0  # seconds for beat to start on an empty database, with a margin
OWN_STOP_LIMIT = 5.0  # seconds the project's beat may take to exit on SIGTERM (issue 7)
STOCK_HERD_MAX = 10_000  # the stock scheduler sends about 90 a second: larger herds take minutes
POLL = 0.05
RATE_SAMPLE = 10_000  # rows: a smaller run's startup says little about the cost per row
VACUUM_AT = 10_000  # rows written or deleted: fewer leave the tables' statistics good enough
LEASE = "public.scheduling_platform_schedulerlease"
STATE = "public.scheduling_platform_schedulestate"


@dataclass
class Bench:
    """What every workload of one run shares."""

    run: str
    window: float
    every: int
    probes: int
    jitter: int
    lease_ttl: int | None
    profile: Path | None
    keep_logs: bool
    say: Callable[[str], None]
    beats: list[BeatProcess] = field(default_factory=list)  # started, for cleanup
    keep: set[Path] = field(default_factory=set)  # logs kept whatever --keep-logs says
    # Per row or change, measured as the run goes; until then, guesses for a 2-core machine.
    rates: dict[str, float] = field(
        default_factory=lambda: {"pickup": 1 / 3000, "stock_load": 1 / 2000}
    )

    def prefix(self, tag: str = "") -> str:
        """Of one workload's rows, or with no tag of every row of the run."""
        return f"bench:{self.run}:{tag}:" if tag else f"bench:{self.run}:"

    def queue(self, tag: str) -> str:
        return f"bench_beat.{self.run}.{tag}"

    @property
    def phase(self) -> float:
        """Failover: how long the load runs before the kill, and after the takeover."""
        return max(2.0, self.window / 4)

    @property
    def grace(self) -> float:
        """How long after a window a late message still counts as sent."""
        return self.jitter + max(2.0, self.window / 10)

    def warm_up_guess(self, size: int) -> float:
        return BEAT_STARTUP + 1.5 * self.rates["pickup"] * size

    def stock_load_guess(self, size: int) -> float:
        return BEAT_STARTUP + 1.5 * self.rates["stock_load"] * size


# --- One queue, its reader and its beats ------------------------------------------------


class Run:
    """Beat processes publishing to one queue, and the reader that pops it."""

    def __init__(self, bench: Bench, *, tag: str, queue: str) -> None:
        self.bench, self.tag, self.queue = bench, tag, queue
        queue_purge(broker_client(), queue)
        self.reader = QueueReader(queue)
        self.reader.start()
        self.beats: list[BeatProcess] = []
        self.first_seen: dict[str, Arrival] = {}  # the first message of each probe
        self._consumed = 0

    def beat(self, scheduler: str, *, label: str, env: dict[str, str] | None = None) -> BeatProcess:
        name = f"{LABEL[scheduler]}-{self.tag}-{label}"
        log = Path(
            tempfile.mkstemp(prefix=f"bench_beat.{self.bench.run}.{name}.", suffix=".log")[1]
        )
        profile = None
        if self.bench.profile is not None and scheduler == OWN:
            profile = self.bench.profile / f"{self.bench.run}-{name}.prof"
        env = {"PGAPPNAME": f"bench_beat:{self.bench.run}:{name}", **(env or {})}
        beat = BeatProcess(scheduler=scheduler, log=log, env=env, profile=profile).start()
        self.beats.append(beat)
        self.bench.beats.append(beat)
        self.bench.say(f"  [{name}] beat pid {beat.pid}, log {log}")
        return beat

    def poll(self) -> None:
        arrivals = self.reader.arrivals
        fresh = arrivals[self._consumed :]  # a slice is atomic under the GIL
        self._consumed += len(fresh)
        for arrival in fresh:
            if ":probe:" in arrival.name:
                self.first_seen.setdefault(arrival.name, arrival)

    def wait(self, done: Callable[[], bool], timeout: float, *, every: float = POLL) -> bool:
        """Poll until done() or the timeout; False on timeout or once no beat is alive."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self.poll()
            if done():
                return True
            if not any(beat.alive for beat in self.beats) or time.monotonic() >= deadline:
                return False
            time.sleep(every)

    def sleep_until(self, moment: float) -> bool:
        """Wait until the wall-clock `moment`; False if every beat died meanwhile."""
        self.wait(lambda: False, moment - time.time())
        return any(beat.alive for beat in self.beats)

    def close(self, rows: list[Row]) -> None:
        for beat in self.beats:
            seconds, killed = beat.stop()
            self.bench.say(f"  beat pid {beat.pid} stopped in {seconds:.1f} s")
            if killed:
                _note(
                    rows, f"beat ignored SIGTERM for {seconds:.0f} s and was killed; log {beat.log}"
                )
                self.bench.keep.add(beat.log)
            elif beat.scheduler == OWN and seconds > OWN_STOP_LIMIT:
                _note(rows, f"beat took {seconds:.1f} s to stop on SIGTERM")
            self._check_log(beat, rows)
            if beat in self.bench.beats:
                self.bench.beats.remove(beat)
        self.reader.stop()
        if self.reader.unreadable:
            _note(rows, f"{self.reader.unreadable} unreadable messages in the queue")
        queue_purge(broker_client(), self.queue)

    def _check_log(self, beat: BeatProcess, rows: list[Row]) -> None:
        text = beat.log_text()
        trouble = {
            "tracebacks": text.count("Traceback"),
            "lease losses": text.count("lost the lease"),
            "publish failures": text.count("not published"),
        }
        found = ", ".join(f"{count} {what}" for what, count in trouble.items() if count)
        exited = beat.process.returncode not in (0, -9, -15)
        if found or exited:
            _note(rows, f"beat log {beat.log}: {found or f'exit code {beat.process.returncode}'}")
        elif not self.bench.keep_logs and beat.log not in self.bench.keep:
            beat.log.unlink(missing_ok=True)


@contextlib.contextmanager
def running(bench: Bench, rows: list[Row], *, tag: str, queue: str) -> Iterator[Run]:
    run = Run(bench, tag=tag, queue=queue)
    try:
        yield run
    finally:
        run.close(rows)


def _note(rows: list[Row], note: str) -> None:
    for row in rows:
        row.notes.append(note)


# --- Steps shared by the workloads -------------------------------------------------------


def own_env(bench: Bench, *, jitter: int | None = None) -> dict[str, str]:
    env = {"SCHEDULER_TENANT_JITTER": str(bench.jitter if jitter is None else jitter)}
    if bench.lease_ttl is not None:
        env["SCHEDULER_LEASE_TTL"] = str(bench.lease_ttl)
    return env


def _change_log_empty() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM public.scheduling_platform_schedulechange)"
        )
        return cursor.fetchone()[0]


def own_beat(
    bench: Bench, run: Run, row: Row, *, label: str, jitter: int | None = None
) -> BeatProcess | None:
    """Start the project's scheduler and wait until it has picked up every change (the
    fleet's state rows exist) and sent what fell due meanwhile; None if it did not."""
    changes = changes_pending()
    beat = run.beat(OWN, label=label, env=own_env(bench, jitter=jitter))
    if not warm_up(bench, run, beat, row, changes=changes):
        return None
    if changes >= VACUUM_AT:
        tables_vacuum()  # the new state rows get statistics, as autovacuum would give them
    if not run.wait(_nothing_overdue, bench.window, every=0.5):
        row.notes.append(f"still sending overdue slots {bench.window:.0f} s after its warm-up")
    return beat


def _nothing_overdue() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT NOT EXISTS (SELECT 1 FROM {STATE} WHERE due_at < now() - interval '2 s')"
        )
        return cursor.fetchone()[0]


def warm_up(bench: Bench, run: Run, beat: BeatProcess, row: Row, *, changes: int) -> bool:
    """Wait until the project's scheduler has picked up every change (its state rows
    exist); the time from spawn goes into the row."""
    timeout = 3 * bench.warm_up_guess(changes) + 60
    if not run.wait(_change_log_empty, timeout, every=0.5):
        left = changes_pending()
        row.failed = True
        row.notes.append(f"warm-up: {left:,} changes still unread {timeout:.0f} s after spawn")
        return False
    row.start_s = time.time() - beat.spawned
    if changes >= RATE_SAMPLE:
        bench.rates["pickup"] = row.start_s / changes
    bench.say(
        f"  warm-up: {changes:,} changes picked up {row.start_s:.1f} s after spawn; "
        f"peak RSS so far {beat.peak_rss_mib() or 0:.1f} MiB"
    )
    return True


def first_message(bench: Bench, run: Run, beat: BeatProcess, fleet: Fleet, row: Row) -> bool:
    """Wait for the stock scheduler's first message of the fleet (it loads every row first)."""
    timeout = bench.stock_load_guess(fleet.size) + bench.window
    found = run.wait(lambda: _first_of(run, fleet) is not None, timeout)
    if not found:
        row.failed = True
        row.notes.append(f"no message {timeout:.0f} s after spawn")
        return False
    row.start_s = _first_of(run, fleet).stamp - beat.spawned
    if fleet.size >= RATE_SAMPLE:
        bench.rates["stock_load"] = row.start_s / fleet.size
    bench.say(f"  first message {row.start_s:.1f} s after spawn")
    return True


def _first_of(run: Run, fleet: Fleet) -> Arrival | None:
    for arrival in run.reader.arrivals:
        if arrival.name.startswith(fleet.prefix) and ":probe:" not in arrival.name:
            return arrival
    return None


def measure(bench: Bench, run: Run, beat: BeatProcess, fleet: Fleet, row: Row, low: int) -> None:
    """The lag window [low, low + window): CPU while it runs, then its tally after a grace."""
    high = low + math.ceil(bench.window)
    if not run.sleep_until(low):
        return _died(row, beat)
    cpu, db = beat.cpu(), backend_cpu(beat.appname)
    if not run.sleep_until(high):
        return _died(row, beat)
    cpu_after, db_after = beat.cpu(), backend_cpu(beat.appname)
    if cpu is not None and cpu_after is not None:
        row.cpu_s = cpu_after - cpu
    row.db_cpu_s = backend_cpu_spent(db, db_after)
    if not run.sleep_until(high + bench.grace):
        return _died(row, beat)
    jitter = _jitter_bound(bench, fleet) if row.scheduler == "own" else 0
    row.tally = tally(fleet, list(run.reader.arrivals), low, high, until=time.time(), jitter=jitter)
    t = row.tally
    bench.say(
        f"  window {high - low} s: {t.sent:,} of {t.expected:,} slots sent, p99 lag "
        f"{_text(t.lag(0.99))} s, max {_text(t.lag(1.0))} s, lost {t.lost:,}, dup {t.dup:,}"
    )
    if t.resent:
        row.notes.append(f"{t.resent:,} copies published again (same task id)")
    if t.off_grid:
        row.notes.append(f"{t.off_grid:,} messages for slots not on their task's grid")
    return None


def _jitter_bound(bench: Bench, fleet: Fleet) -> int:
    """The own scheduler's jitter for the fleet's tasks: at most a tenth of the interval."""
    return min(bench.jitter, fleet.every // 10)


def _text(value: Lag | None) -> str:
    return "-" if value is None else (">" * value.at_least) + f"{value.seconds:.3f}"


def _died(row: Row, beat: BeatProcess) -> None:
    row.failed = True
    code = beat.process.returncode if beat.process else None
    row.notes.append(f"beat exited with code {code}; log {beat.log}")


def pickups(bench: Bench, run: Run, fleet: Fleet, row: Row) -> None:
    """Save new tasks due at once, one after another; how long until each is published.
    A probe still unsent after the timeout ends the series (the scheduler is behind)."""
    timeout = max(10.0, bench.window / 4)
    samples: list[float] = []
    unsent = False
    for number in range(1, bench.probes + 1):
        name = f"{fleet.prefix}probe:{row.scheduler}:{number}"
        committed = probe_create(name=name, queue=run.queue)
        if not run.wait(lambda name=name: name in run.first_seen, timeout):
            row.notes.append(f"probe {number} not published {timeout:.0f} s after its save")
            row.failed = not any(beat.alive for beat in run.beats)
            unsent = True
            break
        samples.append(run.first_seen[name].stamp - committed)
        time.sleep(0.5)  # separate edits, as people make them
    samples.sort()
    if unsent:
        row.figure = f"> {timeout:.0f} s (probe {len(samples) + 1} unsent)"
    elif samples:
        row.figure = f"med {samples[len(samples) // 2]:.2f}, max {samples[-1]:.2f} s"
    bench.say(f"  pickup: {', '.join(f'{s:.2f}' for s in samples) or '-'} s" + " +unsent" * unsent)
    if row.scheduler == "own":
        row.targets = [Target("max < 1 s", bool(samples) and not unsent and samples[-1] < 1.0)]


def _sample_end(run: Run, row_list: list[Row]) -> None:
    for beat in run.beats:
        rss = beat.peak_rss_mib()
        for row in row_list:
            if rss is not None:
                row.rss_mib = max(rss, row.rss_mib or 0.0)


# --- Steady, with change pickup ----------------------------------------------------------


@dataclass
class SteadyPlan:
    size: int
    every: int
    measure: bool  # the lag window
    probe: bool  # change pickup after it
    stock: bool  # the stock scheduler too, on the same rows


def steady(bench: Bench, plan: SteadyPlan) -> list[Row]:
    """`size` tasks every `every` seconds, phases spread: the project's scheduler first, then
    the stock one on the same rows."""
    tag = f"steady{plan.every}-{plan.size}"
    fleet = Fleet(
        prefix=bench.prefix(tag),
        size=plan.size,
        every=plan.every,
        start=math.ceil(time.time() + _creation_guess(plan.size)),
    )
    queue = bench.queue(tag)
    rows: list[Row] = []
    try:
        _create(bench, fleet, queue)
        rows += _steady_own(bench, fleet, plan, queue)
        if plan.stock:
            rows += _steady_stock(bench, fleet, plan, queue)
    finally:
        _delete(bench, fleet.prefix)
    return rows


def _creation_guess(size: int) -> float:
    return 2 + size / 25_000  # INSERT ... SELECT with its trigger, on a 2-core machine


def _create(bench: Bench, fleet: Fleet, queue: str, *, stock_armed: bool = False) -> None:
    started = time.monotonic()
    fleet_create(fleet, queue=queue, stock_armed=stock_armed)
    took = time.monotonic() - started
    bench.say(
        f"[{fleet.prefix}] wrote {fleet.size:,} tasks every {fleet.every} s in {took:.1f} s"
        + _vacuumed(fleet.size)
    )


def _delete(bench: Bench, prefix: str) -> None:
    started = time.monotonic()
    deleted = rows_delete(prefix)
    took = time.monotonic() - started
    bench.say(
        f"[{prefix}] deleted {deleted:,} tasks in {took:.1f} s" + _vacuumed(deleted, full=True)
    )


def _vacuumed(rows: int, *, full: bool = False) -> str:
    """VACUUM ANALYZE after a bulk write; a few rows leave the statistics good enough."""
    if rows < VACUUM_AT:
        return ""
    started = time.monotonic()
    tables_vacuum(full=full)
    return f", vacuumed in {time.monotonic() - started:.1f} s"


def _steady_own(bench: Bench, fleet: Fleet, plan: SteadyPlan, queue: str) -> list[Row]:
    row = Row("steady", "own", fleet.size, every=fleet.every)
    probe_row = Row("pickup", "own", fleet.size, every=fleet.every)
    rows = [row, probe_row]
    row.targets = [Target("p99 < 1 s", None), row.exact_once()]
    if fleet.every >= 3600:
        row.targets.append(Target("RSS < 300 MiB", None))
    bench.say(f"steady own N={fleet.size:,} every {fleet.every} s")
    with running(bench, rows, tag=f"{fleet.size}", queue=queue) as run:
        beat = own_beat(bench, run, row, label="steady")
        if beat is not None:
            if plan.measure:
                low = math.ceil(max(fleet.start, time.time()) + 1)
                measure(bench, run, beat, fleet, row, low)
            if plan.probe:
                pickups(bench, run, fleet, probe_row)
        _sample_end(run, rows)
    _steady_targets(row)
    return [r for r, wanted in ((row, plan.measure), (probe_row, plan.probe)) if wanted]


def _steady_targets(row: Row) -> None:
    p99 = row.tally.lag(0.99) if row.tally else None
    for target in row.targets:
        if target.label == "p99 < 1 s":
            target.met = None if p99 is None else p99.seconds < 1.0 and not p99.at_least
        elif target.label == "RSS < 300 MiB":
            target.met = None if row.rss_mib is None else row.rss_mib < 300
    row.targets = [t if t.label != "0 lost/dup" else row.exact_once() for t in row.targets]


def _steady_stock(bench: Bench, fleet: Fleet, plan: SteadyPlan, queue: str) -> list[Row]:
    row = Row("steady", "stock", fleet.size, every=fleet.every)
    probe_row = Row("pickup", "stock", fleet.size, every=fleet.every)
    rows = [row, probe_row]
    bench.say(f"steady stock N={fleet.size:,} every {fleet.every} s")
    armed_at = time.time() + bench.stock_load_guess(fleet.size)
    fleet_arm_stock(fleet, at=armed_at)
    with running(bench, rows, tag=f"{fleet.size}", queue=queue) as run:
        beat = run.beat(STOCK, label="steady")
        if first_message(bench, run, beat, fleet, row):
            first = _first_of(run, fleet).stamp
            if plan.measure:
                measure(bench, run, beat, fleet, row, math.ceil(max(armed_at, first) + 1))
            if plan.probe:
                pickups(bench, run, fleet, probe_row)
        _sample_end(run, rows)
    return [r for r, wanted in ((row, plan.measure), (probe_row, plan.probe)) if wanted]


# --- Herd -------------------------------------------------------------------------------


def herd(bench: Bench, *, size: int, scheduler: str) -> Row:
    """`size` tasks due at the same second: first message to last."""
    label = LABEL[scheduler]
    row = Row("herd", label, size, every=PROBE_EVERY)
    tag = f"herd-{label}-{size}"
    lead = bench.warm_up_guess(size) if scheduler == OWN else bench.stock_load_guess(size)
    fleet = Fleet(
        prefix=bench.prefix(tag),
        size=size,
        every=PROBE_EVERY,
        start=math.ceil(time.time() + _creation_guess(size) + lead + 2),
        spread=False,
    )
    bench.say(f"herd {label} N={size:,}")
    if scheduler == OWN:
        row.targets = [Target("first-last <= 5 s", None), Target("0 lost/dup", None)]
    try:
        _create(bench, fleet, bench.queue(tag), stock_armed=scheduler == STOCK)
        _herd_run(bench, fleet, row, scheduler, tag)
    finally:
        _delete(bench, fleet.prefix)
    return row


def _herd_run(bench: Bench, fleet: Fleet, row: Row, scheduler: str, tag: str) -> None:
    with running(bench, [row], tag=f"{fleet.size}", queue=bench.queue(tag)) as run:
        if scheduler == OWN:
            beat = own_beat(bench, run, row, label="herd", jitter=0)
        else:
            beat = run.beat(scheduler, label="herd")
        if beat is None:
            return None
        if time.time() > fleet.start:
            row.notes.append(
                f"the herd fell due {time.time() - fleet.start:.1f} s before beat was ready"
            )
        if not run.sleep_until(fleet.start):
            return _died(row, beat)
        cpu = beat.cpu()
        run.wait(lambda: len(run.reader.arrivals) >= fleet.size, bench.window)
        cpu_after = beat.cpu()
        row.cpu_s = None if cpu is None or cpu_after is None else cpu_after - cpu
        run.sleep_until(time.time() + 0.5)  # a straggler or a copy
        _sample_end(run, [row])
        _herd_figures(bench, fleet, row, list(run.reader.arrivals))
    return None


def _herd_figures(bench: Bench, fleet: Fleet, row: Row, arrivals: list[Arrival]) -> None:
    mine = [a for a in arrivals if fleet.index_of(a.name) is not None]
    row.tally = tally(fleet, mine, fleet.start, fleet.start + 1, until=time.time())
    if mine:
        span = mine[-1].stamp - mine[0].stamp
        row.figure = f"first-last {span:.2f} s"
        if row.targets:
            row.targets = [Target("first-last <= 5 s", span <= 5.0)]
            row.targets.append(row.exact_once())
    bench.say(f"  herd: {row.tally.sent:,} of {fleet.size:,} sent; {row.figure or 'nothing sent'}")


# --- Failover ---------------------------------------------------------------------------


def failover(bench: Bench, *, size: int) -> Row:
    """Two beats of the project's scheduler under a steady load; SIGKILL the leader."""
    row = Row("failover", "own", size, every=bench.every)
    row.targets = [Target("gap <= 15 s", None), Target("0 lost/dup", None)]
    tag = f"failover-{size}"
    fleet = Fleet(
        prefix=bench.prefix(tag),
        size=size,
        every=bench.every,
        start=math.ceil(time.time() + _creation_guess(size)),
    )
    bench.say(f"failover own N={size:,} every {bench.every} s")
    try:
        _create(bench, fleet, bench.queue(tag))
        with running(bench, [row], tag=f"{size}", queue=bench.queue(tag)) as run:
            _failover_run(bench, run, fleet, row)
    finally:
        _delete(bench, fleet.prefix)
    return row


def _failover_run(bench: Bench, run: Run, fleet: Fleet, row: Row) -> None:
    run.beat(OWN, label="b", env=own_env(bench))  # they start together; either may lead
    if own_beat(bench, run, row, label="a") is None:
        return None
    if not run.wait(lambda: "stands by" in _logs(run), 30):
        row.failed = True
        row.notes.append("neither beat stands by")
        return None
    leader = _leader(run)
    if leader is None:
        row.failed = True
        row.notes.append("no beat holds the lease")
        return None
    low = math.ceil(max(fleet.start, time.time()) + 1)
    phase = bench.phase
    if not run.sleep_until(low + phase):
        return _died(row, leader)
    killed = time.time()
    leader.kill()
    bench.say(f"  killed the leader (pid {leader.pid})")
    ttl = bench.lease_ttl or settings.SCHEDULER_LEASE_TTL
    resumed = run.wait(lambda: run.reader.since(killed), 3 * ttl + 10)
    if not resumed:
        row.failed = True
        row.notes.append(f"no message within {3 * ttl + 10} s of the kill")
        return None
    high = math.ceil(time.time() + phase)
    run.sleep_until(high + bench.grace)
    arrivals = list(run.reader.arrivals)
    before = [a.stamp for a in arrivals if a.stamp < killed]
    after = run.reader.since(killed)
    gap = after[0].stamp - (before[-1] if before else killed)
    row.figure = f"gap {gap:.1f} s"
    row.tally = tally(
        fleet, arrivals, low, high, until=time.time(), jitter=_jitter_bound(bench, fleet)
    )
    row.targets = [Target("gap <= 15 s", gap <= 15.0), row.exact_once()]
    if row.tally.resent:
        row.notes.append(
            f"{row.tally.resent:,} copies published again by the new leader (same task id: "
            "the worker's duplicate guard runs each once)"
        )
    _sample_end(run, [row])
    bench.say(f"  failover: {row.figure}; lost {row.tally.lost:,}, dup {row.tally.dup:,}")
    return None


def _logs(run: Run) -> str:
    return "".join(beat.log_text() for beat in run.beats)


def _leader(run: Run) -> BeatProcess | None:
    """The beat of this run that holds the lease now."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT holder FROM {LEASE} WHERE name = %s AND expires_at > clock_timestamp()",
            [settings.SCHEDULER_LEASE_NAME],
        )
        found = cursor.fetchone()
    if not found or not found[0]:
        return None
    pid = int(found[0].split(":")[1])
    return next((beat for beat in run.beats if beat.pid == pid), None)
