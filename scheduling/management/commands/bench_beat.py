"""Benchmark the stock beat scheduler and the project's own side by side, in one run.

    python manage.py bench_beat                      # the full run: 20-30 minutes
    python manage.py bench_beat --quick              # small sizes, about a minute
    python manage.py bench_beat --only herd --sizes 1000 --window 60

Both schedulers run as real `celery beat` processes, one after the other, on the same
bench rows (PeriodicTasks shaped like the platform's per-tenant tasks, written with SQL),
with no worker: this command pops what they publish from a queue only this run uses.
The stock side is django-celery-beat's DatabaseScheduler through
scheduling.beat:NominalTimeScheduler, which only adds the `nominal_time` header lag is
measured against. The project's side is scheduling.dispatch.scheduler:DueTimeScheduler.

Workloads (scheduling.bench.workloads; the figures are defined in scheduling.bench.figures):

  steady    N tasks every 60 s, phases spread; lag, lost and duplicate slots, CPU and
            memory over a window. The project's scheduler also runs 1M tasks every hour.
  pickup    after the steady window, under the same load: a task saved through the model,
            due at once; the time until its message is popped.
  herd      N tasks due at the same second; the time from the first message to the last.
  failover  two beats of the project's scheduler under a steady load; the leader is
            SIGKILLed; the gap in messages and the slots lost or repeated across it.

Every wait is bounded by --window: a scheduler that can't keep up is reported, not
waited for. The bench rows, their state, occurrences and queue are removed at the end,
also on an error or Ctrl-C, and every beat is stopped with its process group.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from scheduling.bench.broker import broker_client, queue_purge
from scheduling.bench.figures import Row, notes, table
from scheduling.bench.rows import PREFIX, autovacuum_on, rows_count, rows_delete
from scheduling.bench.workloads import (
    LEASE,
    OWN,
    STOCK,
    STOCK_HERD_MAX,
    Bench,
    SteadyPlan,
    failover,
    herd,
    steady,
)

WORKLOADS = ("steady", "herd", "pickup", "failover")
# Presets; an option given on the command line wins.
FULL = {
    "sizes": [1000, 10000, 100000],
    "hourly": 1_000_000,
    "herd": [1000, 100000],
    "failover_size": 10000,
    "every": 60,
    "window": 120.0,
    "probes": 5,
    "jitter": 6,
    "lease_ttl": None,
    "stock_herd_max": STOCK_HERD_MAX,
}
QUICK = {
    "sizes": [100],
    "hourly": 0,
    "herd": [100],
    "failover_size": 100,
    "every": 4,
    "window": 4.0,
    "probes": 2,
    "jitter": 0,
    "lease_ttl": 2,
    "stock_herd_max": 0,  # the stock scheduler in the steady workload only
}

LEGEND = """\
steady: N tasks every `every` s, phases spread over the interval; the lag window opens once
  beat sends on time (own: its change log is read and nothing is overdue; stock: its first
  message) and lasts --window s. sent/due: slots of the window that got a message / slots
  it owed. lag: pop from Redis minus the message's nominal_time (own: the slot plus the
  tenant jitter, bound {jitter} s), p50/p99/max over the window's messages. lost: owed slots
  with no message {grace:.0f} s after the window; dup: slots with messages of two task ids.
  The stock interval counts from the last send, not a grid: its messages are put on the
  nearest slot of the grid. CPU s: beat's CPU time in the window; db s: its PostgreSQL
  backends'; RSS: beat's peak resident memory (VmHWM) over the whole run.
start s: own, spawn until every change is picked up (the warm-up; a fresh fleet is one
  change per row); stock, spawn until its first message (it loads every row first).
pickup: a new task saved through the model, due at once, while beat runs the steady load;
  seconds from its commit until its message is popped. herd: every task due at the same
  second (own with jitter 0): the first message to the last. failover: two own beats, the
  leader SIGKILLed: the gap between the last message before and the first after, and the
  slots lost or duplicated from the window's start to {phase:.0f} s after the takeover.
stock = django_celery_beat.schedulers:DatabaseScheduler run as scheduling.beat:
  NominalTimeScheduler (the same class plus the nominal_time header).
own = scheduling.dispatch.scheduler:DueTimeScheduler."""


class _Stop(Exception):
    """SIGTERM, turned into an exception so that cleanup runs."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Command(BaseCommand):
    help = "Benchmark the stock and the project's beat schedulers side by side."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--sizes", type=int, nargs="+", help="steady sizes, both schedulers")
        parser.add_argument(
            "--hourly", type=int, help="steady size every hour, own only; 0 skips it"
        )
        parser.add_argument(
            "--herd",
            type=int,
            nargs="+",
            help=f"herd sizes (the stock scheduler up to {STOCK_HERD_MAX:,})",
        )
        parser.add_argument("--failover-size", type=int, help="steady size under the failover")
        parser.add_argument("--every", type=int, help="seconds between a steady task's slots")
        parser.add_argument("--window", type=float, help="seconds of each measurement; the budget")
        parser.add_argument("--probes", type=int, help="changes saved per pickup measurement")
        parser.add_argument(
            "--jitter", type=int, help="SCHEDULER_TENANT_JITTER for the own beats (steady)"
        )
        parser.add_argument(
            "--lease-ttl", type=int, help="SCHEDULER_LEASE_TTL for the own beats (failover)"
        )
        parser.add_argument("--only", action="append", choices=WORKLOADS, help="repeatable")
        parser.add_argument("--skip-stock", action="store_true", help="the project's only")
        parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
        parser.add_argument(
            "--profile", type=Path, help="run the own beats under cProfile, stats in this folder"
        )
        parser.add_argument("--keep-logs", action="store_true", help="keep every beat log")
        parser.add_argument(
            "--clean-stale", action="store_true", help="first delete a killed run's bench rows"
        )

    def say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def handle(self, *args, **options) -> None:
        settings = self._settings(options)
        self._preflight(options)
        bench = Bench(
            run=uuid.uuid4().hex[:8],
            window=settings["window"],
            every=settings["every"],
            probes=settings["probes"],
            jitter=settings["jitter"],
            lease_ttl=settings["lease_ttl"],
            profile=options["profile"],
            keep_logs=options["keep_logs"],
            say=self.say,
        )
        only = set(options["only"] or WORKLOADS)
        self.say(f"bench_beat run {bench.run}: {', '.join(w for w in WORKLOADS if w in only)}")
        self.say(f"  database {connection.settings_dict['NAME']}; logs in {tempfile.gettempdir()}")
        if not autovacuum_on():
            self.say(
                "  autovacuum is off on this server: the bench runs VACUUM ANALYZE itself after"
                " writing and deleting rows and after each warm-up"
            )
        rows: list[Row] = []
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            self._workloads(bench, settings, only, not options["skip_stock"], rows)
        except (KeyboardInterrupt, _Stop):
            with signals_ignored():
                self._cleanup(bench)
            self._report(bench, rows)
            self.say("interrupted: beat was stopped and the bench rows were removed")
            raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        with signals_ignored():
            self._cleanup(bench)
        self._report(bench, rows)

    # --- Options --------------------------------------------------------------------

    def _settings(self, options: dict) -> dict:
        preset = QUICK if options["quick"] else FULL
        chosen = {key: preset[key] if options.get(key) is None else options[key] for key in preset}
        sizes = [*chosen["sizes"], *chosen["herd"], chosen["failover_size"]]
        if any(size < 1 for size in sizes) or chosen["hourly"] < 0:
            raise CommandError("sizes must be at least 1 (--hourly 0 skips the hourly run)")
        if not 1 <= chosen["every"] <= 3600:
            raise CommandError("--every must be 1 to 3600 seconds")
        if chosen["window"] <= 0 or chosen["probes"] < 0 or chosen["jitter"] < 0:
            raise CommandError("--window must be positive, --probes and --jitter not negative")
        if chosen["lease_ttl"] is not None and chosen["lease_ttl"] < 2:
            raise CommandError("--lease-ttl must be at least 2 seconds")
        if options["profile"] is not None and not options["profile"].is_dir():
            raise CommandError(f"--profile {options['profile']}: no such folder")
        return chosen

    def _preflight(self, options: dict) -> None:
        stale = rows_count(PREFIX)
        if stale and not options["clean_stale"]:
            raise CommandError(
                f"{stale:,} bench: tasks of another run exist (one in progress, or one that "
                "was killed); beat would load them too. Delete them with --clean-stale."
            )
        if stale:
            self.say(f"deleted {rows_delete(PREFIX):,} stale bench: tasks")
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT holder FROM {LEASE} WHERE holder <> '' AND expires_at > clock_timestamp()"
            )
            holders = [holder for (holder,) in cursor.fetchall()]
        if holders:
            raise CommandError(
                f"a scheduler runs on this database ({', '.join(holders)} holds the lease): "
                "stop it first, or it would dispatch the bench rows itself."
            )

    # --- The run --------------------------------------------------------------------

    def _workloads(
        self, bench: Bench, settings: dict, only: set[str], stock: bool, rows: list[Row]
    ) -> None:
        measure, probe = "steady" in only, "pickup" in only
        if measure or probe:
            plans = [
                SteadyPlan(size, bench.every, measure, probe, stock) for size in settings["sizes"]
            ]
            if settings["hourly"]:
                plans.append(SteadyPlan(settings["hourly"], 3600, measure, probe, stock=False))
            for plan in plans:
                rows += self._timed(steady, bench, plan)
        if "herd" in only:
            for size in settings["herd"]:
                rows.append(self._timed(herd, bench, size=size, scheduler=OWN))
                if stock and size <= settings["stock_herd_max"]:
                    rows.append(self._timed(herd, bench, size=size, scheduler=STOCK))
        if "failover" in only:
            rows.append(self._timed(failover, bench, size=settings["failover_size"]))

    def _timed(self, workload, *args, **kwargs):
        started = time.monotonic()
        result = workload(*args, **kwargs)
        self.say(f"  ({workload.__name__} took {time.monotonic() - started:.0f} s)")
        return result

    def _cleanup(self, bench: Bench) -> None:
        for beat in list(bench.beats):
            beat.stop()
        deleted = rows_delete(bench.prefix())
        client = broker_client()
        for key in client.scan_iter(match=f"{bench.queue('')}*"):
            queue_purge(client, key.decode())
        if deleted:
            self.say(f"deleted {deleted:,} bench tasks left by this run")

    def _report(self, bench: Bench, rows: list[Row]) -> None:
        if not rows:
            self.say("\nno figures")
            return
        self.say(f"\nbeat benchmark {bench.run}, {time.strftime('%Y-%m-%d %H:%M')}")
        self.say(table(rows))
        written = notes(rows)
        if written:
            self.say("notes:\n" + written)
        self.say(LEGEND.format(jitter=bench.jitter, grace=bench.grace, phase=bench.phase))
