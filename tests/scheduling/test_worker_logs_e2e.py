"""End to end: a real worker and beat log through Django's LOGGING, one JSON object per
line, and each line written inside a task, Celery's own included, names its tenant,
task, task id and periodic task."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django_tenants.utils import schema_context

from config.celery import app
from scheduling.jobs import CLEANUP, SYNC
from scheduling.models import SyncRun
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tests.processes import ONE_PROCESS_WORKER, celery_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLUG = "e2e-logs"
# A log line in any text format: the plain one starts with a date, Celery's own with "[".
TEXT_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d|\[\d{4}-)")


@pytest.fixture
def tenant():
    created = tenant_create(
        name="Logs", slug=SLUG, admin_email=f"a@{SLUG}.test", sync_interval=timedelta(seconds=1)
    )
    yield created.tenant
    tenant_delete(tenant=Tenant.objects.get(schema_name=SLUG))


def _sync_task_ids() -> set[str]:
    with schema_context(SLUG):
        return set(SyncRun.objects.values_list("task_id", flat=True))


def _json_lines(log: Path) -> list[dict]:
    """The log lines of a process's output; its start-up banner is no log line."""
    text = log.read_text()
    assert not [line for line in text.splitlines() if TEXT_LOG_LINE.match(line)]
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_worker_and_beat_write_json_lines_naming_each_tasks_tenant(tenant, tmp_path):
    redis.Redis.from_url(settings.REDIS.client).delete("celery")  # no stale messages
    with (
        celery_process("worker", tmp_path / "worker.log", *ONE_PROCESS_WORKER),
        celery_process("beat", tmp_path / "beat.log", "--max-interval", "1"),
    ):
        wait_until(_sync_task_ids, timeout=30, what="a sync that beat sent")
        cleanup_id = app.send_task(CLEANUP.task_name).id
        wait_until(
            lambda: f"{cleanup_id}] succeeded" in (tmp_path / "worker.log").read_text(),
            timeout=30,
            what="the cleanup job",
        )

    lines = _json_lines(tmp_path / "worker.log")
    assert all(line.keys() >= {"time", "level", "logger", "message"} for line in lines)
    syncs = [line for line in lines if line.get("task") == SYNC.task_name]
    assert syncs and all(
        (line["tenant"], line["periodic_task_name"]) == (SLUG, f"tenant:{SLUG}:sync")
        and line["task_id"] in _sync_task_ids()
        for line in syncs
    )
    assert any(line["message"].startswith(f"Task {SYNC.task_name}[") for line in syncs)
    cleanup = [line for line in lines if line.get("task_id") == cleanup_id]
    assert {line["logger"] for line in cleanup} == {"scheduling.platform.tasks", "celery.app.trace"}
    assert all(
        (line["tenant"], line["task"], line["periodic_task_name"])
        == ("public", CLEANUP.task_name, None)
        for line in cleanup
    )
    beat = _json_lines(tmp_path / "beat.log")
    assert any(f"Sending due task tenant:{SLUG}:sync" in line["message"] for line in beat)
