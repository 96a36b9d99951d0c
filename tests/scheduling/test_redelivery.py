"""End to end: a sync that cannot finish, because its feed never answers, with real
workers. At its soft time limit the worker fails the run with a clear error and goes
on. A worker killed with SIGKILL mid-sync leaves its message unacknowledged in Redis
(tasks are acknowledged late); once the visibility timeout passes, another worker gets
the same message, fails the run the dead one left running, and completes the sync.

The killed workers use tests/scheduling/redelivery_settings.py: a 4 s visibility
timeout and a sweep for such messages every second, so the redelivery comes in seconds.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import redis
from django.conf import settings
from django_tenants.utils import schema_context

from config.celery import app
from scheduling.jobs import SYNC
from scheduling.models import SyncRun
from scheduling.platform.models import SyncFailure
from scheduling.services import RUN_REDELIVERED, RUN_TIMED_OUT
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete, tenant_sync_run_now
from tests.feeds import FeedServer
from tests.processes import ONE_PROCESS_WORKER, celery_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLUG = "e2e-stuck"
SHORT_VISIBILITY = {"DJANGO_SETTINGS_MODULE": "tests.scheduling.redelivery_settings"}


@pytest.fixture
def feed():
    server = FeedServer()
    server.body = json.dumps({"records": [{"id": 1, "title": "One"}]}).encode()
    server.hang = 1  # the first request never gets an answer: the sync stays running
    yield server
    server.close()


@pytest.fixture
def fed_tenant(feed):
    tenant = tenant_create(name="Stuck", slug=SLUG, admin_email=f"a@{SLUG}.test").tenant
    tenant.source_kind, tenant.source_url = Tenant.SourceKind.HTTP_JSON, feed.url
    tenant.save()
    yield tenant
    tenant_delete(tenant=Tenant.objects.get(schema_name=SLUG))


@pytest.fixture
def broker():
    """Redis without messages or unacknowledged deliveries left by other tests."""
    client = redis.Redis.from_url(settings.REDIS.client)
    keys = ("celery", "unacked", "unacked_index", "unacked_mutex")
    client.delete(*keys)
    yield client
    client.delete(*keys)


def _runs(**filters) -> list[SyncRun]:
    with schema_context(SLUG):
        return list(SyncRun.objects.filter(**filters).order_by("started_at"))


def _finished(count: int) -> bool:
    runs = _runs()
    return len(runs) == count and runs[-1].finished_at is not None


def test_a_sync_past_its_soft_time_limit_fails_cleanly_and_the_worker_goes_on(
    fed_tenant, feed, broker, tmp_path
):
    # A read timeout far beyond the test's limits: only the soft time limit can end the wait.
    log = tmp_path / "worker.log"
    slow_reads = {"SYNC_FETCH_READ_TIMEOUT": "120"}
    with celery_process("worker", log, *ONE_PROCESS_WORKER, env=slow_reads) as worker:
        headers = {"_schema_name": SLUG}
        app.send_task(SYNC.task_name, headers=headers, soft_time_limit=1, time_limit=30)
        wait_until(lambda: _finished(1), timeout=30, what="the run to time out")
        app.send_task(SYNC.task_name, headers=headers)  # within the kind's own limits
        wait_until(lambda: _finished(2), timeout=30, what="the next run")
        assert worker.poll() is None

    timed_out, next_run = _runs()
    assert (timed_out.status, timed_out.error) == ("failed", RUN_TIMED_OUT)
    assert (next_run.status, next_run.created_count) == ("ok", 1)
    assert SyncFailure.objects.get().error == RUN_TIMED_OUT
    text = log.read_text()
    assert "Soft time limit (1s) exceeded for scheduling.sync_tenant" in text
    assert "Traceback" not in text


def test_a_sync_whose_worker_was_killed_is_delivered_again_and_completes(
    fed_tenant, feed, broker, tmp_path
):
    task_id = tenant_sync_run_now(tenant=fed_tenant)

    with celery_process(
        "worker", tmp_path / "first.log", *ONE_PROCESS_WORKER, env=SHORT_VISIBILITY
    ) as first:
        wait_until(lambda: _runs(task_id=task_id), timeout=30, what="the sync to start")
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, with no warm shutdown
        first.wait()
    # The message stayed with Redis: unacknowledged, or back in the queue if the dead
    # worker's own sweep already found it older than the visibility timeout.
    assert broker.hlen("unacked") + broker.llen("celery") == 1
    assert [run.status for run in _runs(task_id=task_id)] == ["running"]

    with celery_process(
        "worker", tmp_path / "second.log", *ONE_PROCESS_WORKER, env=SHORT_VISIBILITY
    ):
        wait_until(
            lambda: any(run.status == "ok" for run in _runs(task_id=task_id)),
            timeout=30,
            what="the redelivered sync to complete",
        )

    interrupted, completed = _runs(task_id=task_id)
    assert (interrupted.status, interrupted.error) == ("failed", RUN_REDELIVERED)
    assert (completed.status, completed.created_count) == ("ok", 1)
    assert len(feed.requests) == 2
    assert SyncFailure.objects.get(run_public_id=interrupted.public_id).error == RUN_REDELIVERED
    assert broker.hlen("unacked") == 0
