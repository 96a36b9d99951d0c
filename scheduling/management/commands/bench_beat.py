"""Benchmark a celery beat scheduler on N periodic tasks spread across tenants.

    python manage.py bench_beat --schedules 1000 10000 100000 --budget-seconds 600

For each size N it writes N enabled PeriodicTasks shaped like the platform's own
(`bench:<run>:<N>:tenant:<schema>:<kind>`, a registered job, the `_schema_name`
header, two kinds per tenant schema), with intervals of 30-60 s whose phases are
staggered so that tasks fall due as a steady stream. It then runs a real
`celery -A config beat` (the scheduler named by --scheduler, by default the
project's CELERY_BEAT_SCHEDULER) and reads what beat publishes from a queue that
only this run uses. No worker is needed. Figures:

  startup  beat spawned -> its first bench dispatch (loading the N rows included)
  settle   first dispatch -> every task that fell due during startup has been sent
  lag      publish time - due time, for dispatches due in the window after settle
  pickup   a disabled task enabled with .save() -> beat publishes it
  RSS      beat's peak resident memory (VmHWM)

The publish time is when this command popped the message from Redis: an upper
bound, a few ms late at most while the reader keeps up. A repeat dispatch is due
`every` seconds after the previous one was seen, which is how the interval
schedule counts (from the last run, not from the nominal time).

The rows, their IntervalSchedules and the queue are removed at the end, also on
an error or Ctrl-C, and beat is stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.jobs import DIGEST_DISPATCH, SYNC, Job

STOCK_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"  # the baseline
DEFAULT_SIZES = [1000, 10000, 100000]
BATCH = 2000
KINDS: tuple[tuple[str, Job], ...] = (("sync", SYNC), ("digests", DIGEST_DISPATCH))
PROBE_EVERY = 3600  # a probe must not fire twice during a run
STOP_GRACE = 20.0  # beat writes its dirty rows on SIGTERM; give it that long
# Until a size has run, assume these per-row costs (measured on a 2-core machine).
GUESS_CREATE_PER_ROW = 0.0003
GUESS_STARTUP_PER_ROW = 0.0005
GUESS_CLEANUP_PER_ROW = 0.0002


# --- Rows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    every: float  # seconds
    first: float  # epoch seconds of the first due time


@dataclass
class Rows:
    prefix: str
    dues: dict[str, Due] = field(default_factory=dict)
    probes: list[str] = field(default_factory=list)
    interval_ids: list[int] = field(default_factory=list)

    @property
    def offered_rate(self) -> float:
        return sum(1 / due.every for due in self.dues.values())


def schema_of(name: str) -> str:
    # bench:<run>:<size>:tenant:<schema>:<kind>
    return name.split(":")[-2]


def rows_create(
    rows: Rows, *, size: int, probes: int, queue: str, intervals: range, rng: random.Random
) -> None:
    """Write `size` enabled tasks and `probes` disabled ones; due times start when this returns.

    `rows` is filled as the work goes, so a cleanup after an interruption finds everything.
    """
    for every in [*intervals, PROBE_EVERY]:
        schedule = IntervalSchedule.objects.create(every=every, period=IntervalSchedule.SECONDS)
        rows.interval_ids.append(schedule.pk)
    schedules = {s.every: s for s in IntervalSchedule.objects.filter(pk__in=rows.interval_ids)}
    base = time.time()
    batch: list[PeriodicTask] = []
    for index in range(size + probes):
        probe = index >= size
        schema = f"bench-probe-{index - size}" if probe else f"bench-{index // len(KINDS):06d}"
        kind, job = KINDS[0] if probe else KINDS[index % len(KINDS)]
        every = PROBE_EVERY if probe else rng.choice(intervals)
        # Task 0 is due at once, so the first dispatch times beat's startup, not the schedule.
        phase = 0.0 if index == 0 else rng.uniform(0, every)
        name = f"{rows.prefix}tenant:{schema}:{kind}"
        last_run = None if probe else base + phase - every
        batch.append(_task_row(name, job, schema, schedules[every], queue, last_run))
        if probe:
            rows.probes.append(name)
        else:
            rows.dues[name] = Due(every=every, first=base + phase)
        if len(batch) >= BATCH:
            PeriodicTask.objects.bulk_create(batch)
            batch = []
    PeriodicTask.objects.bulk_create(batch)
    _rows_arm(rows, shift=time.time() - base)


def _task_row(
    name: str,
    job: Job,
    schema: str,
    interval: IntervalSchedule,
    queue: str,
    last_run: float | None,
) -> PeriodicTask:
    """A row as the platform writes them; without a last run it is a disabled probe."""
    return PeriodicTask(
        name=name,
        task=job.task_name,
        interval=interval,
        headers=json.dumps({"_schema_name": schema}),
        args="[]",
        kwargs="{}",
        queue=queue,
        description=job.description,
        enabled=last_run is not None,
        last_run_at=None if last_run is None else datetime.fromtimestamp(last_run, tz=UTC),
    )


def _rows_arm(rows: Rows, *, shift: float) -> None:
    """Move every due time forward by the time creation took, so the stream starts now."""
    PeriodicTask.objects.filter(name__startswith=rows.prefix, enabled=True).update(
        last_run_at=F("last_run_at") + timedelta(seconds=shift)
    )
    PeriodicTasks.update_changed()  # a bulk write must tell beat (DESIGN.md)
    rows.dues = {
        name: Due(every=due.every, first=due.first + shift) for name, due in rows.dues.items()
    }


def rows_delete(*, prefix: str, interval_ids: list[int]) -> int:
    deleted = _tasks_delete(prefix)
    # Another task may have adopted one of our schedules meanwhile; deleting it would cascade.
    IntervalSchedule.objects.filter(pk__in=interval_ids, periodictask__isnull=True).delete()
    PeriodicTasks.update_changed()
    return deleted


def _tasks_delete(prefix: str) -> int:
    """Delete the tasks named prefix*, in one statement.

    QuerySet.delete() sends django-celery-beat's pre_delete signal per row, and each bumps
    PeriodicTasks: about 7 ms a row, 12 minutes for 100k. Nothing refers to bench rows, so
    plain SQL is safe; should something refer to one, the deferred foreign key fails the
    commit and the ORM's delete (which cascades) runs instead.
    """
    table = connection.ops.quote_name(PeriodicTask._meta.db_table)
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE name LIKE %s", [pattern])
            return cursor.rowcount
    except IntegrityError:
        return PeriodicTask.objects.filter(name__startswith=prefix).delete()[0]


def probe_fire(name: str) -> float:
    """Enable a probe through the model, due at once; returns when the change was committed."""
    task = PeriodicTask.objects.get(name=name)
    task.enabled = True
    task.last_run_at = datetime.now(tz=UTC) - timedelta(seconds=PROBE_EVERY)
    task.save()  # bumps PeriodicTasks, as an admin or a service would
    return time.time()


# --- Broker -----------------------------------------------------------------------


class Arrival(NamedTuple):
    stamp: float  # epoch seconds when popped from Redis
    name: str  # periodic_task_name header
    schema: str | None  # _schema_name header


def broker_client() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url)


def queue_purge(client: redis.Redis, queue: str) -> None:
    # The queue, its priority sub-queues, and kombu's routing entries for it.
    bindings = [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    client.delete(*client.scan_iter(match=f"{queue}*"), *bindings)
    client.zrem("_kombu.binding_deadlines", queue)


class QueueReader(threading.Thread):
    """Pops beat's messages off the bench queue as they come and stamps them."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        super().__init__(name="bench-beat-reader", daemon=True)
        self.arrivals: list[Arrival] = []  # append-only; read from the main thread
        self._client, self._queue = client, queue
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            raw = self._client.rpop(self._queue, 500)
            if not raw:
                popped = self._client.brpop([self._queue], timeout=0.2)
                raw = [popped[1]] if popped else []
            stamp = time.time()
            self.arrivals.extend(a for a in map(_arrival, raw, [stamp] * len(raw)) if a)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _arrival(raw: bytes, stamp: float) -> Arrival | None:
    try:
        headers = json.loads(raw)["headers"]
    except (ValueError, KeyError, TypeError):
        return None
    name = headers.get("periodic_task_name")
    return Arrival(stamp, name, headers.get("_schema_name")) if name else None


# --- Beat process -------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: beat gets SIGTERM if this command is killed outright, so it never lingers.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def database_url() -> str:
    """The URL this command's own settings were built from, for the beat subprocess."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    db = settings.DATABASES["default"]
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    if db["HOST"].startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={db['HOST']}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{auth}@{db['HOST']}{port}/{db['NAME']}"


class BeatProcess:
    """`celery -A config beat` in its own process group, output to a log file."""

    def __init__(self, *, scheduler: str, log: Path, extra_env: dict[str, str]) -> None:
        self.scheduler, self.log = scheduler, log
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        command = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*command, "--scheduler", self.scheduler],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # called before any thread of ours runs
            )
        return time.time()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_mb(self, key: str) -> float | None:
        """VmRSS (now) or VmHWM (peak) from /proc, in MB."""
        if not self.alive:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self) -> tuple[float, bool]:
        """SIGTERM the group, SIGKILL it after STOP_GRACE; returns (seconds, killed)."""
        if self.process is None:
            return 0.0, False
        started, killed = time.monotonic(), False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        return time.monotonic() - started, killed

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# --- PostgreSQL, as beat uses it ------------------------------------------------------


class PgWatch:
    """Beat's PostgreSQL backends (found by application_name) and sessions opened on the db."""

    def __init__(self, appname: str) -> None:
        self.appname = appname
        self.backends: set[tuple[int, datetime]] = set()
        self._sessions_before = self._sessions()

    @staticmethod
    def _sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(cursor.fetchone()[0])

    def sample(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
                [self.appname],
            )
            self.backends.update(cursor.fetchall())

    @property
    def sessions_opened(self) -> int:
        return self._sessions() - self._sessions_before


# --- Figures --------------------------------------------------------------------------


class Sample(NamedTuple):
    lag: float  # seconds
    censored: bool  # not sent by the end of collection: the lag is at least this


def replay(
    arrivals: list[Arrival], dues: dict[str, Due], until: float
) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """(due, sent) of each bench dispatch seen by `until`, and every task's next due after."""
    pending = {name: due.first for name, due in dues.items()}
    sent: list[tuple[float, float]] = []
    for arrival in arrivals:
        due = pending.get(arrival.name)
        if due is None or arrival.stamp > until:
            continue
        sent.append((due, arrival.stamp))
        # The interval schedule counts from the last run, not from the nominal time.
        pending[arrival.name] = arrival.stamp + dues[arrival.name].every
    return sent, pending


def lags_compute(
    arrivals: list[Arrival], dues: dict[str, Due], start: float, end: float, until: float
) -> list[Sample]:
    """Lags of the dispatches due in [start, end); unsent ones are censored at `until`."""
    sent, pending = replay(arrivals, dues, until)
    samples = [Sample(stamp - due, False) for due, stamp in sent if start <= due < end]
    samples += [Sample(until - due, True) for due in pending.values() if start <= due < end]
    return sorted(samples)


def percentile(samples: list[Sample], fraction: float) -> Sample:
    """Nearest rank. Unsent tasks can only push a percentile up, so once one ranks at or
    below it, the value is a lower bound and is marked censored."""
    rank = min(len(samples) - 1, max(0, round(fraction * (len(samples) - 1))))
    return Sample(samples[rank].lag, any(s.censored for s in samples[: rank + 1]))


def shown(sample: Sample, scale: float, digits: int) -> str:
    value = sample.lag * scale
    digits = digits if abs(value) < 100 else 0
    return (">" if sample.censored else "") + f"{value:.{digits}f}"


@dataclass
class SizeResult:
    size: int
    skipped: bool = False
    failed: bool = False  # beat died, never dispatched, or logged a traceback
    cut: bool = False  # the budget shortened the lag window or the pickup probes
    notes: list[str] = field(default_factory=list)
    create_s: float | None = None
    startup_s: float | None = None
    settle_s: float | None = None
    due_rate: float | None = None
    sent_rate: float | None = None
    lags: list[Sample] = field(default_factory=list)
    pickups: list[Sample] = field(default_factory=list)
    rss_peak_mb: float | None = None

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        return "no" if self.failed else "partial" if self.cut else "yes"

    def lag(self, fraction: float) -> str:
        return shown(percentile(self.lags, fraction), 1000, 1) if self.lags else "-"

    def pickup(self, fraction: float) -> str:
        return shown(percentile(self.pickups, fraction), 1, 2) if self.pickups else "-"

    def row(self) -> str:
        def num(value: float | None, digits: int) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        cells = (
            (self.size, 8),
            (num(self.startup_s, 1), 9),
            (num(self.settle_s, 1), 8),
            (num(self.due_rate, 1), 8),
            (num(self.sent_rate, 1), 8),
            (self.lag(0.5), 9),
            (self.lag(0.99), 9),
            (self.lag(1.0), 9),
            (len(self.lags) or "-", 8),
            (self.pickup(0.5), 8),
            (self.pickup(1.0), 8),
            (num(self.rss_peak_mb, 1), 7),
        )
        return "".join(f"{value:>{width}}" for value, width in cells) + f"  {self.status}"


TABLE_HEADER = (
    f"{'N':>8}{'startup':>9}{'settle':>8}{'due/s':>8}{'sent/s':>8}{'lag p50':>9}"
    f"{'lag p99':>9}{'lag max':>9}{'sampled':>8}{'pickup':>8}{'pickup':>8}{'RSS':>7}"
    "  completed\n"
    f"{'':>8}{'s':>9}{'s':>8}{'':>8}{'':>8}{'ms':>9}{'ms':>9}{'ms':>9}{'':>8}"
    f"{'med s':>8}{'max s':>8}{'MB':>7}"
)
LEGEND = """\
startup: beat spawned -> first bench dispatch. settle: until the tasks due during startup
were sent. due/s: offered rate; sent/s: bench dispatches per second in the lag window.
lag: publish - due, over the dispatches due in the window (sampled); ">" marks a task
still unsent at the end (lag at least that). pickup: PeriodicTask .save() -> published.
RSS: beat's peak resident memory (VmHWM). completed: yes, partial (budget cut the window
or the probes), no (see notes), skipped (not enough budget left to start it)."""

STARTUP_BASE = 2.0  # seconds beat needs to start with no rows (interpreter, Django, Celery)


# --- The command ----------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM, turned into an exception so that cleanup runs."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


OPTIONS: tuple[tuple[str, type, object, str], ...] = (
    ("--budget-seconds", float, 600.0, "total time for all sizes, cleanup included"),
    ("--window-seconds", float, 60.0, "lag window once beat has settled"),
    ("--settle-seconds", float, 30.0, "longest wait for beat to send its startup backlog"),
    ("--pickup-probes", int, 5, "changes saved while beat runs, one after another"),
    ("--interval-min", int, 30, "shortest task interval, seconds"),
    ("--interval-max", int, 60, "longest task interval, seconds"),
    ("--queue", str, "bench_beat", "queue name prefix; the run id and size are appended"),
    ("--conn-max-age", int, None, "DATABASE_CONN_MAX_AGE for beat; None: as configured"),
    ("--seed", int, 1, "random seed for intervals and phases"),
)


class Command(BaseCommand):
    help = "Benchmark celery beat (stock DatabaseScheduler by default) on N tenant tasks."

    def add_arguments(self, parser) -> None:
        sizes = " ".join(map(str, DEFAULT_SIZES))
        parser.add_argument(
            "--schedules",
            type=int,
            nargs="+",
            action="extend",
            metavar="N",
            help=f"sizes to run, in order; repeatable (default {sizes})",
        )
        parser.add_argument(
            "--scheduler",
            default=STOCK_SCHEDULER,
            help=f"class for `celery beat --scheduler` (default: {STOCK_SCHEDULER}, the baseline)",
        )
        for flag, kind, default, text in OPTIONS:
            parser.add_argument(flag, type=kind, default=default, help=f"{text} ({default})")
        parser.add_argument("--keep-logs", action="store_true", help="always keep beat's log")
        parser.add_argument(
            "--clean-stale", action="store_true", help="first delete a killed run's bench: tasks"
        )

    def say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def handle(self, *args, **options) -> None:
        self.options = options
        self._validate()
        self.deadline = time.monotonic() + options["budget_seconds"]
        self.run = uuid.uuid4().hex[:8]
        self.rates = {
            "create": GUESS_CREATE_PER_ROW,
            "startup": GUESS_STARTUP_PER_ROW,
            "cleanup": GUESS_CLEANUP_PER_ROW,
        }
        self._stale_check()
        self._say_setup()
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        results: list[SizeResult] = []
        try:
            for size in options["schedules"] or DEFAULT_SIZES:
                results.append(SizeResult(size))
                self._size(results[-1])
        except (KeyboardInterrupt, _Stop):
            results[-1].failed = True
            results[-1].notes.append("interrupted")
            self._report(results)
            self.say("interrupted: beat was stopped and the bench rows were removed")
            raise SystemExit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._report(results)

    def _validate(self) -> None:
        o = self.options
        if any(size < 1 for size in o["schedules"] or DEFAULT_SIZES):
            raise CommandError("--schedules must be at least 1")
        if not 1 <= o["interval_min"] <= o["interval_max"] < PROBE_EVERY:
            raise CommandError("need 1 <= --interval-min <= --interval-max < 3600")
        if min(o["window_seconds"], o["budget_seconds"]) <= 0 or o["pickup_probes"] < 0:
            raise CommandError("--window-seconds and --budget-seconds must be positive")

    def _stale_check(self) -> None:
        stale = PeriodicTask.objects.filter(name__startswith="bench:")
        count = stale.count()
        if count and not self.options["clean_stale"]:
            raise CommandError(
                f"{count} bench: tasks of another run exist (one in progress, or one that was "
                "killed); beat would load them too. Delete them with --clean-stale."
            )
        if count:
            _tasks_delete("bench:")
            PeriodicTasks.update_changed()
            self.say(f"deleted {count} stale bench: tasks")

    def _say_setup(self) -> None:
        o = self.options
        age = o["conn_max_age"]
        age_text = (
            f"{age} (--conn-max-age)"
            if age is not None
            else f"{settings.DATABASES['default']['CONN_MAX_AGE']} (from settings)"
        )
        self.say(
            f"bench_beat run {self.run}: scheduler {o['scheduler']}\n"
            f"  settings {settings.SETTINGS_MODULE}, database {connection.settings_dict['NAME']},"
            f" beat's CONN_MAX_AGE {age_text}\n"
            f"  intervals {o['interval_min']}-{o['interval_max']} s, lag window "
            f"{o['window_seconds']:g} s, {o['pickup_probes']} pickup probes, "
            f"budget {o['budget_seconds']:g} s\n"
            f"  {PeriodicTask.objects.filter(enabled=True).count()} other enabled periodic "
            "tasks in this database (beat loads them too)"
        )

    # --- Budget -----------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cleanup_reserve(self, size: int) -> float:
        return 5 + STOP_GRACE + self.rates["cleanup"] * size

    def startup_guess(self, size: int) -> float:
        return STARTUP_BASE + self.rates["startup"] * size

    def _estimate(self, size: int) -> float:
        """Seconds a size needs at least: rows, startup, a 10 s window, stop and cleanup."""
        window = min(10.0, self.options["window_seconds"])
        rows = self.rates["create"] * size
        return rows + self.startup_guess(size) + window + self.cleanup_reserve(size)

    # --- One size ---------------------------------------------------------------------

    def _size(self, result: SizeResult) -> None:
        size = result.size
        need = self._estimate(size)
        if need > self.remaining():
            result.skipped = True
            result.notes.append(
                f"skipped: needs about {need:.0f} s (rows, beat startup, a 10 s window, "
                f"cleanup) and {max(0.0, self.remaining()):.0f} s of the budget are left"
            )
            self.say(f"[N={size}] {result.notes[-1]}")
            return
        rows = Rows(prefix=f"bench:{self.run}:{size}:")
        queue = f"{self.options['queue']}.{self.run}.{size}"
        client = broker_client()
        try:
            queue_purge(client, queue)
            self._rows(result, rows, queue)
            self._measure(result, rows, client, queue)
        finally:
            with signals_held():
                self._cleanup(result, rows, client, queue)

    def _rows(self, result: SizeResult, rows: Rows, queue: str) -> None:
        o, size = self.options, result.size
        started = time.monotonic()
        rows_create(
            rows,
            size=size,
            probes=o["pickup_probes"],
            queue=queue,
            intervals=range(o["interval_min"], o["interval_max"] + 1),
            rng=random.Random(o["seed"]),
        )
        result.create_s = time.monotonic() - started
        self.rates["create"] = result.create_s / size
        result.due_rate = rows.offered_rate
        self.say(
            f"[N={size}] wrote {size} tasks over {(size + 1) // len(KINDS)} tenant schemas "
            f"(+{len(rows.probes)} disabled probes) in {result.create_s:.1f} s; "
            f"{result.due_rate:.1f} fall due per second"
        )

    def _cleanup(self, result: SizeResult, rows: Rows, client: redis.Redis, queue: str) -> None:
        started = time.monotonic()
        deleted = rows_delete(prefix=rows.prefix, interval_ids=rows.interval_ids)
        queue_purge(client, queue)
        took = time.monotonic() - started
        self.rates["cleanup"] = max(self.rates["cleanup"], took / result.size)
        left = PeriodicTask.objects.filter(name__startswith=rows.prefix).count()
        self.say(
            f"[N={result.size}] deleted {deleted} rows and the queue in {took:.1f} s"
            + (f"; {left} REMAIN" if left else "")
        )

    def _measure(self, result: SizeResult, rows: Rows, client: redis.Redis, queue: str) -> None:
        size = result.size
        log = Path(tempfile.mkstemp(prefix=f"bench_beat.{self.run}.{size}.", suffix=".log")[1])
        appname = f"bench_beat:{self.run}:{size}"  # lets PgWatch find beat's connections
        extra_env = {"PGAPPNAME": appname}
        if self.options["conn_max_age"] is not None:
            extra_env["DATABASE_CONN_MAX_AGE"] = str(self.options["conn_max_age"])
        beat = BeatProcess(scheduler=self.options["scheduler"], log=log, extra_env=extra_env)
        watch = PgWatch(appname)
        reader = QueueReader(client=broker_client(), queue=queue)
        self.keep_log = False
        spawned = beat.start()
        reader.start()
        try:
            self.say(
                f"[N={size}] beat started (pid {beat.process.pid}), log {log} (kept on trouble)"
            )
            Session(self, result, rows, beat, reader, watch, spawned).run()
        finally:
            with signals_held():
                result.rss_peak_mb = beat.memory_mb("VmHWM") or result.rss_peak_mb
                stop_s, killed = beat.stop()
                reader.stop()
                self._say_after(result, beat, watch, stop_s, killed)
        if not (result.failed or self.keep_log or self.options["keep_logs"]):
            log.unlink(missing_ok=True)

    def _say_after(
        self, result: SizeResult, beat: BeatProcess, watch: PgWatch, stop_s: float, killed: bool
    ) -> None:
        if "Traceback" in beat.log_text():
            result.failed = True
            result.notes.append(f"beat logged a traceback, see {beat.log}")
        if killed:
            self.keep_log = True
            result.notes.append(f"beat ignored SIGTERM for {STOP_GRACE:.0f} s, see {beat.log}")
        self.say(
            f"[N={result.size}] beat: peak RSS {result.rss_peak_mb or 0:.1f} MB; "
            f"{len(watch.backends)} PostgreSQL backend(s) of beat seen (sampled each second), "
            f"{watch.sessions_opened} session(s) opened on the database during the run; "
            f"stopped in {stop_s:.1f} s" + (" by SIGKILL after the SIGTERM grace" if killed else "")
        )
        if result.failed:
            self.say(f"[N={result.size}] beat log tail ({beat.log}):\n{beat.log_tail()}")

    # --- Report -----------------------------------------------------------------------

    def _report(self, results: list[SizeResult]) -> None:
        self.say(f"\nbeat benchmark, scheduler {self.options['scheduler']}")
        self.say(TABLE_HEADER)
        for result in results:
            self.say(result.row())
        notes = [f"  N={r.size}: {note}" for r in results for note in r.notes]
        if notes:
            self.say("notes:\n" + "\n".join(notes))
        self.say(LEGEND)


class Session:
    """One run of beat on one size: startup, settle, lag window, pickup probes."""

    def __init__(
        self,
        command: Command,
        result: SizeResult,
        rows: Rows,
        beat: BeatProcess,
        reader: QueueReader,
        watch: PgWatch,
        spawned: float,
    ) -> None:
        self.cmd, self.result, self.rows = command, result, rows
        self.beat, self.reader, self.watch, self.spawned = beat, reader, watch, spawned
        self.size = result.size
        self.first_seen: dict[str, float] = {}  # name -> when it was first published
        self.first_bench: float | None = None
        self.backlog: set[str] = set()
        self._consumed = 0
        self._sampled_at = 0.0

    def say(self, message: str) -> None:
        self.cmd.say(f"[N={self.size}] {message}")

    def left(self) -> float:
        """Seconds left for measuring, keeping enough to stop beat and clean up."""
        return self.cmd.remaining() - self.cmd.cleanup_reserve(self.size)

    def run(self) -> None:
        if not self._startup():
            return
        start = self._settle()
        if self._window(start):
            self._pickups()

    # --- Waiting --------------------------------------------------------------------

    def _poll(self) -> None:
        fresh = self.reader.arrivals[self._consumed :]  # a slice is atomic under the GIL
        self._consumed += len(fresh)
        for arrival in fresh:
            self.first_seen.setdefault(arrival.name, arrival.stamp)
            self.backlog.discard(arrival.name)
            if self.first_bench is None and arrival.name in self.rows.dues:
                self.first_bench = arrival.stamp
        if time.monotonic() - self._sampled_at >= 1.0:
            self._sampled_at = time.monotonic()
            self.watch.sample()
            self.result.rss_peak_mb = self.beat.memory_mb("VmHWM") or self.result.rss_peak_mb

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll until done() or the timeout; False on timeout or when beat has died."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self._poll()
            if done():
                return True
            if not self.beat.alive:
                self.fail(f"beat exited with code {self.beat.process.returncode}")
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def fail(self, note: str) -> None:
        if not self.result.failed:
            self.result.failed = True
            self.result.notes.append(note)
            self.say(note)

    def cut(self, note: str) -> None:
        self.result.cut = True
        self.result.notes.append(note)
        self.say(note)

    # --- Phases ---------------------------------------------------------------------

    def _startup(self) -> bool:
        if not self.wait(lambda: self.first_bench is not None, self.left()):
            waited = time.time() - self.spawned
            self.fail(f"no dispatch {waited:.0f} s after beat started, and the budget is spent")
            return False
        self.result.startup_s = self.first_bench - self.spawned
        per_row = (self.result.startup_s - STARTUP_BASE) / self.size
        self.cmd.rates["startup"] = max(per_row, self.cmd.rates["startup"] / 4, 1e-6)
        self.say(f"first dispatch {self.result.startup_s:.1f} s after beat was spawned")
        return True

    def _settle(self) -> float:
        """Wait until the tasks due before the first dispatch are sent; returns window start."""
        first = self.first_bench
        due_early = {name for name, due in self.rows.dues.items() if due.first <= first}
        self.backlog = due_early - self.first_seen.keys()
        limit = min(self.cmd.options["settle_seconds"], max(0.0, self.left() - 10))
        drained = self.wait(lambda: not self.backlog, limit)
        now = time.time()
        self.result.settle_s = now - first
        if drained:
            self.say(f"startup backlog of {len(due_early)} tasks sent {now - first:.1f} s later")
        else:
            self.result.notes.append(
                f"startup backlog not cleared: {len(self.backlog)} of {len(due_early)} tasks "
                f"unsent {now - first:.0f} s after the first dispatch; the lag window measures "
                "a beat that is behind"
            )
            self.say(self.result.notes[-1])
        return now

    def _window_length(self) -> float:
        """The asked-for window, shortened when the budget would not leave room for pickup."""
        o = self.cmd.options
        probe_guess = 5 + 2 * self.result.startup_s  # a tick, a full reload, and a margin
        pickup_need = min(o["pickup_probes"], 3) * probe_guess
        floor = min(10.0, o["window_seconds"])
        return min(o["window_seconds"], max(floor, self.left() - pickup_need))

    def _window(self, start: float) -> bool:
        window = self._window_length()
        grace = min(5.0, window / 4)
        if window + grace > self.left():
            self.fail(f"only {self.left():.0f} s of budget left for the lag window")
            return False
        if window < self.cmd.options["window_seconds"]:
            self.cut(f"lag window cut to {window:.0f} s by the budget")
        self.say(f"measuring lag for {window:.0f} s (+{grace:.1f} s for late sends)")
        end = start + window
        self.wait(lambda: False, end + grace - time.time())
        if not self.beat.alive:
            return False
        arrivals = list(self.reader.arrivals)
        self.result.lags = lags_compute(arrivals, self.rows.dues, start, end, end + grace)
        sent = sum(start <= a.stamp < end and a.name in self.rows.dues for a in arrivals)
        self.result.sent_rate = sent / window
        overdue = sum(due < end for due in replay(arrivals, self.rows.dues, end)[1].values())
        self._say_window(arrivals, overdue)
        return True

    def _say_window(self, arrivals: list[Arrival], overdue: int) -> None:
        r = self.result
        unsent = sum(sample.censored for sample in r.lags)
        bench = [a for a in arrivals if a.name in self.rows.dues]
        wrong = sum(a.schema != schema_of(a.name) for a in bench)
        self.say(
            f"lag over {len(r.lags)} dispatches due in the window: p50 {r.lag(0.5)} ms, "
            f"p99 {r.lag(0.99)} ms, max {r.lag(1.0)} ms; {unsent} still unsent after the "
            f"grace; sent {r.sent_rate:.1f}/s while {r.due_rate:.1f}/s fall due; "
            f"{overdue} tasks overdue at the window's end; "
            f"{len(bench) - wrong} of {len(bench)} messages so far carry their _schema_name"
        )
        if wrong:
            r.failed = True
            r.notes.append(f"{wrong} messages lacked their tenant's _schema_name header")

    def _pickups(self) -> None:
        probes = self.rows.probes
        per_probe = max(30.0, 3 * self.result.startup_s)
        for index, name in enumerate(probes, 1):
            timeout = min(per_probe, self.left())
            if timeout < 5:
                self.cut(f"pickup: only {index - 1} of {len(probes)} probes fit the budget")
                return
            if not self._pickup(index, name, timeout):
                return
            time.sleep(1.0)  # keep the changes apart, as separate edits would be

    def _pickup(self, index: int, name: str, timeout: float) -> bool:
        changed = probe_fire(name)
        seen = self.wait(lambda: name in self.first_seen, timeout)
        if seen:
            sample = Sample(self.first_seen[name] - changed, False)
        else:
            sample = Sample(time.time() - changed, True)
            self.result.notes.append(f"pickup probe {index} unsent after {timeout:.0f} s; stopped")
        self.result.pickups = sorted([*self.result.pickups, sample])
        self.say(f"pickup {index}/{len(self.rows.probes)}: {shown(sample, 1, 2)} s")
        return seen and self.beat.alive
