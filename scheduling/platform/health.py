"""Health endpoints for load balancers and process supervisors, on every host name.

  /healthz         PostgreSQL and Redis answer: 200, else 503
  /healthz/beat    beat's heartbeat task ran in the last HEALTH_BEAT_MAX_AGE seconds;
                   also says whether a scheduler process holds the leader lease
  /healthz/worker  at least one Celery worker answers a ping

Each answers JSON with a detail per check, and nothing secret: no addresses, no
passwords, only an exception's class name when something fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from celery import current_app
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from scheduling import metrics
from scheduling.dispatch import DUE_TIME_SCHEDULER
from scheduling.dispatch.lease import TABLE as LEASE_TABLE

# A check that hangs is a failed check: keep each well under a probe's own timeout.
REDIS_TIMEOUT = 1.0
WORKER_PING_TIMEOUT = 1.0


def _timed(check: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # any failure is the answer, never a 500
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS.client, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()


def health_services() -> dict[str, Any]:
    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    return {"ok": all(check["ok"] for check in checks.values()), "checks": checks}


def health_beat() -> dict[str, Any]:
    try:
        last = metrics.beat_heartbeat_last()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__, "max_age_seconds": _beat_max_age()}
    age = None if last is None else round((timezone.now() - last).total_seconds(), 1)
    answer = {
        "ok": age is not None and age <= _beat_max_age(),
        "last_heartbeat": last.isoformat() if last else None,
        "age_seconds": age,
        "max_age_seconds": _beat_max_age(),
    }
    if settings.CELERY_BEAT_SCHEDULER == DUE_TIME_SCHEDULER:
        answer["leader"] = _leader()
    return answer


def _leader() -> dict[str, Any]:
    """Whether a scheduler process leads now, by the lease row and the database's clock.

    Not part of `ok`: the heartbeat already proves that slots are sent and run. This
    tells a stale heartbeat's causes apart: no leader (no beat process is up, or none
    reaches the database) or a leader whose messages don't get run (the broker, the
    workers). The holder's name (host and pid) is not shown.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT epoch, holder <> '' AND expires_at > clock_timestamp(),
                       extract(epoch FROM clock_timestamp() - renewed_at)
                FROM {LEASE_TABLE} WHERE name = %s
                """,
                [settings.SCHEDULER_LEASE_NAME],
            )
            row = cursor.fetchone()
    except Exception as exc:  # the answer, never a 500
        return {"held": False, "error": type(exc).__name__}
    if row is None:
        return {"held": False, "epoch": None, "renewed_seconds_ago": None}
    epoch, held, renewed_ago = row
    return {"held": held, "epoch": epoch, "renewed_seconds_ago": round(float(renewed_ago), 1)}


def health_worker() -> dict[str, Any]:
    redis_check = _timed(_redis)
    if not redis_check["ok"]:  # no broker: a ping would only wait for its timeout
        return {"ok": False, "workers": [], "error": f"broker: {redis_check['error']}"}
    try:
        replies = current_app.control.ping(timeout=WORKER_PING_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "workers": [], "error": type(exc).__name__}
    workers = sorted(name for reply in replies for name in reply)
    return {"ok": bool(workers), "workers": workers}


def _beat_max_age() -> int:
    return settings.HEALTH_BEAT_MAX_AGE


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "/healthz": health_services,
    "/healthz/beat": health_beat,
    "/healthz/worker": health_worker,
}


def health_response(request: HttpRequest) -> JsonResponse | None:
    """The answer for a health path (GET or HEAD), or None for any other request."""
    check = CHECKS.get(request.path_info.rstrip("/") or "/")
    if check is None or request.method not in {"GET", "HEAD"}:
        return None
    result = check()
    response = JsonResponse(result, status=200 if result["ok"] else 503)
    response["Cache-Control"] = "no-store"
    return response
