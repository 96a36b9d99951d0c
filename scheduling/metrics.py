"""Platform counters kept in Redis, shared by every worker."""

from __future__ import annotations

from datetime import datetime
from functools import cache

import redis
from django.conf import settings
from django.utils import timezone

REFUSED_KEY = "platform:tasks:refused_without_tenant"
HEARTBEAT_KEY = "platform:beat:heartbeat"


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS.client)


def refused_task_record() -> int:
    return int(_client().incr(REFUSED_KEY))


def refused_task_count() -> int:
    return int(_client().get(REFUSED_KEY) or 0)


def beat_heartbeat_record() -> datetime:
    """Store now as the last heartbeat; the task only runs when beat, broker and a worker are up."""
    moment = timezone.now()
    _client().set(HEARTBEAT_KEY, moment.isoformat())
    return moment


def beat_heartbeat_last() -> datetime | None:
    raw = _client().get(HEARTBEAT_KEY)
    if not raw:
        return None
    return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)
