"""Platform counters kept in Redis, shared by every worker."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings

REFUSED_KEY = "platform:tasks:refused_without_tenant"


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS.client)


def refused_task_record() -> int:
    return int(_client().incr(REFUSED_KEY))


def refused_task_count() -> int:
    return int(_client().get(REFUSED_KEY) or 0)
