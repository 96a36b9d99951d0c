"""Benchmark publishing N task messages three ways, side by side.

    python manage.py bench_publish --messages 100000

  apply_async  one Task.apply_async per message, as beat sends now;
  kombu        publish_batch(via="kombu"): Celery's message and publish through one
               producer, a Redis pipeline per chunk;
  redis        publish_batch(via="redis"): kombu's envelope built once per kind of
               message, pipelined LPUSHes.

The messages are shaped like the scheduler's: sync tasks for 100 tenant schemas, with
`_schema_name`, `periodic_task_name`, `nominal_time` and `occurrence` headers, task ids
derived from occurrence keys, an expiry. They go to a queue only this run uses, which no
worker reads. After each way the command checks that the queue holds exactly N messages
(LLEN) and empties it; at the end it removes the queue and kombu's binding for it, also
on an error or Ctrl-C. Figures per way:

  msg/s     N / wall-clock seconds
  CPU s     this process's user + system time (Redis's own is not counted)
  peak RSS  this process's peak resident memory during the way (the peak is reset before
            each way), and how far it rose above the resident memory at the start
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.celery import app
from scheduling.beat import NOMINAL_TIME_HEADER
from scheduling.bench.broker import queue_purge
from scheduling.dispatch import occurrence_key, occurrence_task_id
from scheduling.dispatch.publish import (
    CHUNK_SIZE,
    OCCURRENCE_HEADER,
    PERIODIC_TASK_HEADER,
    Outgoing,
    publish_batch,
)
from scheduling.jobs import SYNC
from scheduling.tasks import sync_tenant

SCHEMAS = 100
WAYS = ("apply_async", "kombu", "redis")
STATUS = Path("/proc/self/status")


def bench_messages(count: int, *, queue: str) -> list[Outgoing]:
    nominal = datetime.now(UTC).replace(microsecond=0)
    messages = []
    for number in range(count):
        schema = f"bench{number % SCHEMAS:03d}"
        key = occurrence_key(number + 1, nominal)
        headers = {
            "_schema_name": schema,
            PERIODIC_TASK_HEADER: f"tenant:{schema}:sync",
            NOMINAL_TIME_HEADER: nominal.isoformat(),
            OCCURRENCE_HEADER: key,
        }
        messages.append(
            Outgoing(
                task_name=SYNC.task_name,
                task_id=occurrence_task_id(key),
                headers=headers,
                expires=nominal + timedelta(hours=1),
                queue=queue,
            )
        )
    return messages


def apply_async_each(messages: Sequence[Outgoing]) -> None:
    for message in messages:
        sync_tenant.apply_async(
            task_id=message.task_id,
            headers=dict(message.headers),
            expires=message.expires,
            queue=message.queue,
        )


def publish_via(via: str, *, chunk_size: int) -> Callable[[Sequence[Outgoing]], None]:
    def publish(messages: Sequence[Outgoing]) -> None:
        report = publish_batch(messages, via=via, chunk_size=chunk_size)
        if not report.complete:
            raise CommandError(f"{via}: {len(report.published)} published, then {report.error!r}")

    return publish


def memory_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise CommandError(f"No {key} in {STATUS}")


def peak_reset() -> None:
    """Make the peak resident memory (VmHWM) the current one (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


class Command(BaseCommand):
    help = "Publish N messages by apply_async, a kombu producer and pipelined Redis; compare."

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=100_000)
        parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
        parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
        parser.add_argument("--queue", default=f"bench_publish_{uuid.uuid4().hex[:8]}")

    def handle(self, *args, messages: int, chunk_size: int, ways, queue: str, **options):
        if messages < 1 or chunk_size < 1:
            raise CommandError("--messages and --chunk-size must be at least 1.")
        transport = app.connection_for_write().transport.driver_type
        if transport != "redis":
            raise CommandError(f"The broker must be Redis (LLEN is the check), not {transport}.")
        broker = redis.Redis.from_url(settings.REDIS.client)
        batch = bench_messages(messages, queue=queue)
        publish = {
            "apply_async": apply_async_each,
            "kombu": publish_via("kombu", chunk_size=chunk_size),
            "redis": publish_via("redis", chunk_size=chunk_size),
        }
        self.stdout.write(f"{messages} messages to queue {queue}, chunks of {chunk_size}")
        self.stdout.write(
            f"{'way':<12}{'messages':>10}{'seconds':>9}{'msg/s':>9}{'CPU s':>8}"
            f"{'peak RSS MB':>13}{'+RSS MB':>9}{'LLEN':>9}  check"
        )
        wrong = []
        try:
            for way in ways:
                queue_purge(broker, queue)
                gc.collect()
                peak_reset()
                rss_before = memory_mb("VmRSS")
                started, cpu_started = time.perf_counter(), time.process_time()
                publish[way](batch)
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
                peak = memory_mb("VmHWM")
                length = broker.llen(queue)
                if length != messages:
                    wrong.append(way)
                self.stdout.write(
                    f"{way:<12}{messages:>10}{seconds:>9.2f}{messages / seconds:>9.0f}{cpu:>8.2f}"
                    f"{peak:>13.1f}{peak - rss_before:>9.1f}{length:>9}  "
                    f"{'ok' if length == messages else 'WRONG'}"
                )
        finally:
            queue_purge(broker, queue)
        if wrong:
            raise CommandError(f"LLEN is not {messages} after: {', '.join(wrong)}")
