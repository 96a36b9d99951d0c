"""Platform metrics kept in Redis: written by every worker, read back by /metrics.

Workers on many machines record here and the web process reads it all at each
scrape (scheduling.platform.prometheus), so nothing depends on which process
ran what. The keys:

  platform:tasks:refused_without_tenant  tenant tasks refused for want of a tenant
  platform:beat:heartbeat                 ISO time of beat's last heartbeat task
  platform:metrics:runs                   hash, JSON [tenant, kind, status] -> runs
  platform:metrics:sync_last_success      hash, tenant schema -> unix time of its last ok sync
  platform:metrics:lag:<kind>             hash, a bucket's upper bound -> observations that
                                          fell in it (not cumulative), and "sum" and "count"

Recording a task's metrics (refused_task_record, job_run_record, sync_run_record,
dispatch_lag_observe) never raises and never waits long: a task must not fail or
slow down because Redis is away. A failed write is lost, recording then pauses
for RECORDING_PAUSE seconds, and an outage is logged once. Reads raise
redis.RedisError; /metrics answers 503 then.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache, wraps

import redis
from celery import Task, current_app
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import ChannelError
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

REFUSED_KEY = "platform:tasks:refused_without_tenant"
HEARTBEAT_KEY = "platform:beat:heartbeat"
RUNS_KEY = "platform:metrics:runs"
SYNC_LAST_SUCCESS_KEY = "platform:metrics:sync_last_success"
LAG_KEY = "platform:metrics:lag:{kind}"

# The `status` of a run: what became of the task, or for a sync, of its SyncRun.
OK, FAILED, RETRIED, REFUSED, SKIPPED = "ok", "failed", "retried", "refused", "skipped"

# Dispatch lag bucket bounds in seconds, 50 ms to 15 min: a healthy beat and worker
# start a task well under a second late; minutes mean a backlog or a stopped worker.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)

REDIS_TIMEOUT = 1.0  # seconds, for connecting and for each command
RECORDING_PAUSE = 30.0  # seconds without recording after a failed write


@cache
def _client() -> redis.Redis:
    # One attempt, no retry with backoff: a lost metric is better than a waiting task.
    return redis.Redis.from_url(
        settings.REDIS.client,
        socket_connect_timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


class _RecordingGuard:
    """Wraps each write: skipped while paused after a failure, and a failure only logged
    when an outage begins (and its end when a write works again)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.paused_until = 0.0
        self.failing = False

    def __call__(self, write: Callable[..., None]) -> Callable[..., None]:
        @wraps(write)
        def guarded(*args, **kwargs) -> None:
            if time.monotonic() < self.paused_until:
                return
            try:
                write(*args, **kwargs)
            except redis.RedisError as exc:
                self.paused_until = time.monotonic() + self.pause
                if not self.failing:
                    self.failing = True
                    logger.warning(
                        "Metrics are not recorded while Redis fails (%s: %s); tasks carry on. "
                        "Next try in %d s.",
                        type(exc).__name__,
                        exc,
                        self.pause,
                    )
                return
            if self.failing:
                self.failing = False
                logger.warning("Metrics are recorded again.")

        return guarded


_recording = _RecordingGuard(pause=RECORDING_PAUSE)


# --- Recording ----------------------------------------------------------------


def task_outcome_mark(task: Task, status: str) -> None:
    """Say that the running task returns without doing its work, and why (REFUSED,
    SKIPPED); scheduling.task_signals counts it under that status when it returns."""
    task.request.job_outcome = status


def task_outcome_marked(task: Task) -> str | None:
    return getattr(task.request, "job_outcome", None)


@_recording
def refused_task_record() -> None:
    _client().incr(REFUSED_KEY)


@_recording
def job_run_record(*, tenant: str, kind: str, status: str) -> None:
    """Count one run of `kind`; `tenant` is "" for platform jobs and refused tasks."""
    _client().hincrby(RUNS_KEY, _run_field(tenant, kind, status), 1)


@_recording
def sync_run_record(*, tenant: str, status: str, finished_at: datetime) -> None:
    """Count a finished SyncRun, and keep the time of the tenant's last successful one."""
    from scheduling.jobs import SYNC  # jobs imports this module

    with _client().pipeline(transaction=True) as pipe:
        pipe.hincrby(RUNS_KEY, _run_field(tenant, SYNC.kind, status), 1)
        if status == OK:
            pipe.hset(SYNC_LAST_SUCCESS_KEY, tenant, finished_at.timestamp())
        pipe.execute()


@_recording
def dispatch_lag_observe(*, kind: str, seconds: float) -> None:
    """Add one observation to the lag histogram of `kind`, all its fields in one MULTI.

    A negative lag (the worker's clock behind beat's) counts as 0.
    """
    seconds = max(seconds, 0.0)
    with _client().pipeline(transaction=True) as pipe:
        key = LAG_KEY.format(kind=kind)
        bound = next((bound for bound in LAG_BUCKETS if seconds <= bound), None)
        if bound is not None:  # above the last bound it counts only in +Inf, that is count
            pipe.hincrby(key, str(bound), 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.execute()


def beat_heartbeat_record() -> datetime:
    """Store now as the last heartbeat; the task only runs when beat, broker and a worker are up.

    Not guarded: this write is the heartbeat task's whole work, so it should fail with it.
    """
    moment = timezone.now()
    _client().set(HEARTBEAT_KEY, moment.isoformat())
    return moment


def _run_field(tenant: str, kind: str, status: str) -> str:
    return json.dumps([tenant, kind, status])


# --- Reading --------------------------------------------------------------------


@dataclass(frozen=True)
class LagHistogram:
    buckets: dict[float, int]  # upper bound -> observations at or below it (cumulative)
    count: int
    sum: float


def refused_task_count() -> int:
    return int(_client().get(REFUSED_KEY) or 0)


def beat_heartbeat_last() -> datetime | None:
    raw = _client().get(HEARTBEAT_KEY)
    if not raw:
        return None
    return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)


def job_runs() -> dict[tuple[str, str, str], int]:
    """Runs by (tenant, kind, status)."""
    return {
        tuple(json.loads(field)): int(count) for field, count in _client().hgetall(RUNS_KEY).items()
    }


def sync_last_successes() -> dict[str, float]:
    """Unix time of each tenant's last successful sync, by schema."""
    return {
        tenant.decode(): float(moment)
        for tenant, moment in _client().hgetall(SYNC_LAST_SUCCESS_KEY).items()
    }


def dispatch_lags(kinds: Iterable[str]) -> dict[str, LagHistogram]:
    """The lag histogram of each of `kinds` that has observations."""
    kinds = list(kinds)
    with _client().pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.hgetall(LAG_KEY.format(kind=kind))
        stored = pipe.execute()
    histograms = {}
    for kind, fields in zip(kinds, stored, strict=True):
        if not fields:
            continue
        fields = {name.decode(): value for name, value in fields.items()}
        running, buckets = 0, {}
        for bound in LAG_BUCKETS:
            running += int(fields.get(str(bound), 0))
            buckets[bound] = running
        histograms[kind] = LagHistogram(
            buckets=buckets, count=int(fields["count"]), sum=float(fields["sum"])
        )
    return histograms


def queue_depths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue on the broker, counted by kombu's own Redis
    transport: the queue's list plus its priority lists (`<queue>\\x06\\x16<priority>`),
    under the broker's key prefix. Messages a worker has reserved are not waiting."""
    depths = {}
    with current_app.connection_for_read() as connection:
        channel = connection.channel()
        try:
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except ChannelError:  # none of its lists exists: nothing is waiting
                    depths[queue] = 0
        finally:
            channel.close()
    return depths
