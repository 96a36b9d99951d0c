"""What beat publishes, read back from Redis as it comes.

Beat publishes to a queue only this run uses, and no worker reads it. A thread pops
the messages in chunks and stamps each with the time it was popped: an upper bound on
when it was published, a few milliseconds late while the reader keeps up.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import NamedTuple

import redis
from django.conf import settings

from scheduling.beat import NOMINAL_TIME_HEADER

CHUNK = 2000


class Arrival(NamedTuple):
    stamp: float  # epoch seconds when popped
    name: str  # periodic_task_name
    nominal: float | None  # the nominal_time header (the slot plus any jitter), epoch seconds
    slot: float | None  # the slot named by the occurrence header (the project's scheduler)
    task_id: str
    schema: str | None  # _schema_name


def broker_client() -> redis.Redis:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url)


def queue_purge(client: redis.Redis, queue: str) -> None:
    """The queue, its priority sub-queues, and kombu's routing entries for it."""
    bindings = [f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    client.delete(*client.scan_iter(match=f"{queue}*"), *bindings)
    client.zrem("_kombu.binding_deadlines", queue)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def arrival_parse(raw: bytes, stamp: float) -> Arrival | None:
    """A message as kombu's Redis transport stores it; None for anything else."""
    try:
        headers = json.loads(raw)["headers"]
        name = headers["periodic_task_name"]
    except (ValueError, KeyError, TypeError):
        return None
    occurrence = headers.get("occurrence") or ""
    return Arrival(
        stamp=stamp,
        name=name,
        nominal=_epoch(headers.get(NOMINAL_TIME_HEADER)),
        slot=_epoch(occurrence.partition(":")[2]),
        task_id=headers.get("id", ""),
        schema=headers.get("_schema_name"),
    )


class QueueReader(threading.Thread):
    """Pops beat's messages off `queue` and keeps them, stamped, in `arrivals`."""

    def __init__(self, queue: str) -> None:
        super().__init__(name="bench-beat-reader", daemon=True)
        self.arrivals: list[Arrival] = []  # append-only; read from the main thread
        self.unreadable = 0
        self._client, self._queue = broker_client(), queue
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            raw = self._client.rpop(self._queue, CHUNK)
            if not raw:
                popped = self._client.brpop([self._queue], timeout=0.2)
                raw = [popped[1]] if popped else []
            stamp = time.time()
            for message in raw:
                arrival = arrival_parse(message, stamp)
                if arrival is None:
                    self.unreadable += 1
                else:
                    self.arrivals.append(arrival)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def since(self, moment: float) -> list[Arrival]:
        """The arrivals popped at or after `moment` (the list is in pop order)."""
        arrivals = list(self.arrivals)
        low, high = 0, len(arrivals)
        while low < high:
            middle = (low + high) // 2
            if arrivals[middle].stamp < moment:
                low = middle + 1
            else:
                high = middle
        return arrivals[low:]
