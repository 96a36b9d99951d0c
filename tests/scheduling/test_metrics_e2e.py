"""End to end: /metrics after real runs of a worker and a beat, as processes.

Two tenants sync every second, one from a feed that answers and one from a feed that
answers 500. Before the worker starts, the test fills the Celery queue itself and
reads its depth; then the worker drains it (the messages are heartbeats), beat sends
the syncs, and a task without a tenant is refused. The scrape must agree with the
database and with Redis: runs per tenant and status, the last success, the lag of
every beat-sent sync, the heartbeat's age and the refusal.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django_tenants.utils import schema_context

from config.celery import app
from scheduling import metrics
from scheduling.jobs import HEARTBEAT, SYNC
from scheduling.models import SyncRun
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tests.feeds import FeedServer
from tests.processes import celery_process, wait_until
from tests.scheduling.metrics_scrape import metrics_clean, scrape

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GOOD, BAD = "e2e-metrics-good", "e2e-metrics-bad"
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: <queue><sep><priority>


@pytest.fixture
def syncing_tenants():
    good, bad = FeedServer(), FeedServer()
    good.body = json.dumps({"records": [{"id": 1, "title": "One"}]}).encode()
    bad.status = 500
    for slug, feed in ((GOOD, good), (BAD, bad)):
        tenant = tenant_create(
            name=slug, slug=slug, admin_email=f"a@{slug}.test", sync_interval=timedelta(seconds=1)
        ).tenant
        tenant.source_kind, tenant.source_url = "http_json", feed.url
        tenant.save()
    yield
    for tenant in Tenant.objects.filter(schema_name__in=[GOOD, BAD]):
        tenant_delete(tenant=tenant)
    good.close()
    bad.close()


def _runs(slug: str, status: str | None = None) -> list[SyncRun]:
    with schema_context(slug):
        runs = SyncRun.objects.exclude(status=SyncRun.Status.RUNNING)
        return list(runs.filter(status=status) if status else runs)


def _celery_lists(broker: redis.Redis) -> list[bytes]:
    return [b"celery", *broker.scan_iter(f"celery{PRIORITY_SEPARATOR}*")]


def test_metrics_after_real_runs_agree_with_the_database_and_redis(syncing_tenants, tmp_path):
    broker = redis.Redis.from_url(settings.REDIS.client)
    broker.delete(*_celery_lists(broker))  # no stale messages
    with metrics_clean():
        # 1. A queue no worker consumes yet: three heartbeats, at three priorities.
        for priority in (0, 5, 9):
            app.send_task(HEARTBEAT.task_name, priority=priority)
        lists = {key: broker.llen(key) for key in _celery_lists(broker)}
        waiting = scrape().value("scheduler_queue_depth_messages", queue="celery")

        # 2. A worker and beat: the heartbeats run, beat sends the syncs every second.
        started = time.time()
        with celery_process(
            "worker", tmp_path / "worker.log", "--concurrency", "2", "--without-mingle"
        ):
            wait_until(
                lambda: "ready." in (tmp_path / "worker.log").read_text(),
                timeout=30,
                what="the worker",
            )
            with celery_process("beat", tmp_path / "beat.log", "--max-interval", "1"):
                wait_until(
                    lambda: len(_runs(GOOD)) >= 2 and _runs(BAD),
                    timeout=30,
                    what="two syncs of one tenant and one of the other",
                )
            app.send_task(SYNC.task_name, headers={"_schema_name": None})
            wait_until(lambda: metrics.refused_task_count() == 1, timeout=15, what="the refusal")
        finished = time.time()  # the worker finished its tasks before it stopped

        result = scrape()

    assert waiting == sum(lists.values()) == 3
    assert lists[f"celery{PRIORITY_SEPARATOR}3".encode()] == 1  # priority lists are counted

    good_ok, bad_failed = len(_runs(GOOD, "ok")), len(_runs(BAD, "failed"))
    assert (len(_runs(GOOD)), len(_runs(BAD))) == (good_ok, bad_failed)
    assert result.runs(kind="sync") == {
        (GOOD, "sync", "ok"): good_ok,
        (BAD, "sync", "failed"): bad_failed,
        ("", "sync", "refused"): 1,
    }
    assert result.value("scheduler_tasks_refused_without_tenant_total") == 1
    assert result.runs(kind="heartbeat") == {("", "heartbeat", "ok"): 3}

    last_success = result.labelled("scheduler_sync_last_success_timestamp_seconds")
    assert set(last_success) == {frozenset({("tenant", GOOD)})}
    with schema_context(GOOD):
        last_ok = SyncRun.objects.filter(status="ok").latest("finished_at").finished_at
    assert started < last_success[frozenset({("tenant", GOOD)})] < finished
    assert last_success[frozenset({("tenant", GOOD)})] == pytest.approx(
        last_ok.timestamp(), abs=1e-3
    )

    # Every sync was sent by beat, stamped: each one's lag was measured, and none of the
    # heartbeats the test sent itself.
    lag_count = result.value("scheduler_dispatch_lag_seconds_count", kind="sync")
    lag_sum = result.value("scheduler_dispatch_lag_seconds_sum", kind="sync")
    assert lag_count == good_ok + bad_failed
    assert 0 < lag_sum < lag_count * (finished - started)
    assert result.value("scheduler_dispatch_lag_seconds_count", kind="heartbeat") is None

    age = result.value("scheduler_beat_heartbeat_age_seconds")
    assert 0 < age < time.time() - started
    assert result.value("scheduler_queue_depth_messages", queue="celery") == 0
