"""Log lines: one JSON object per line for a log pipeline, or plain text for people, and
inside a Celery task both name the tenant, task, task id and periodic task."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import datetime

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from config.logs import JsonFormatter, PlainFormatter, TaskContextFilter
from scheduling.models import SyncRun
from scheduling.platform.tasks import cleanup_runs
from scheduling.services import RUN_REDELIVERED
from scheduling.tasks import sync_tenant
from tests.settings_probe import base_setting

TASK_FIELDS = {"tenant", "task", "task_id", "periodic_task_name"}


def _record(message: str, *args, exc_info=None) -> logging.LogRecord:
    record = logging.LogRecord(
        "scheduling.services", logging.WARNING, "f.py", 1, message, args, exc_info
    )
    TaskContextFilter().filter(record)
    return record


class Captured:
    """What the root logger writes, through the project's filter and a formatter of choice."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(TaskContextFilter())
        self.handler.setFormatter(JsonFormatter())

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def captured():
    captured = Captured()
    logging.getLogger().addHandler(captured.handler)
    yield captured
    logging.getLogger().removeHandler(captured.handler)


def test_a_line_outside_a_task_has_time_level_logger_and_message_only():
    line = JsonFormatter().format(_record("Synced %d records for %s", 3, "acme"))

    fields = json.loads(line)
    assert fields.keys() == {"time", "level", "logger", "message"}
    assert fields["message"] == "Synced 3 records for acme"
    assert (fields["level"], fields["logger"]) == ("WARNING", "scheduling.services")
    assert fields["time"].endswith("Z")
    assert datetime.fromisoformat(fields["time"]).utcoffset().total_seconds() == 0


def test_an_exception_and_newlines_stay_on_one_line():
    try:
        {}["missing"]
    except KeyError:
        record = _record("first line\nsecond line", exc_info=sys.exc_info())

    line = JsonFormatter().format(record)

    assert "\n" not in line
    fields = json.loads(line)
    assert fields["message"] == "first line\nsecond line"
    assert fields["exception"].startswith("Traceback (most recent call last):")
    assert fields["exception"].endswith("KeyError: 'missing'")


def test_non_ascii_text_is_escaped_and_comes_back_unchanged():
    text = "Zürich, café ✓ 東京 \u2028 end"

    line = JsonFormatter().format(_record(text))

    assert line.isascii()
    assert json.loads(line)["message"] == text


def test_the_plain_format_is_the_usual_line_outside_a_task():
    formatter = PlainFormatter("%(levelname)s %(name)s: %(message)s")

    assert formatter.format(_record("hello")) == "WARNING scheduling.services: hello"


@pytest.mark.django_db
def test_a_tenant_tasks_lines_name_its_tenant_task_id_and_periodic_task(tenant_a, captured):
    with schema_context("acme"):
        SyncRun.objects.create(task_id="t-1", started_at=timezone.now())

    sync_tenant.apply(
        task_id="t-1", headers={"_schema_name": "acme", "periodic_task_name": "tenant:acme:sync"}
    )

    [line] = [json.loads(text) for text in captured.lines() if RUN_REDELIVERED in text]
    assert {key: line[key] for key in TASK_FIELDS} == {
        "tenant": "acme",
        "task": "scheduling.sync_tenant",
        "task_id": "t-1",
        "periodic_task_name": "tenant:acme:sync",
    }


@pytest.mark.django_db
def test_a_platform_job_sent_by_hand_logs_as_public_with_no_periodic_task(tenant_a, captured):
    logging.getLogger("scheduling.platform.tasks").setLevel(logging.INFO)
    try:
        result = cleanup_runs.apply()
    finally:
        logging.getLogger("scheduling.platform.tasks").setLevel(logging.NOTSET)

    [line] = [json.loads(text) for text in captured.lines() if "Deleted 0 run(s)" in text]
    assert {key: line[key] for key in TASK_FIELDS} == {
        "tenant": "public",
        "task": "scheduling.cleanup_runs",
        "task_id": result.id,
        "periodic_task_name": None,
    }


@pytest.mark.django_db
def test_the_plain_format_ends_a_tasks_line_with_its_tenant_task_and_id(tenant_a, captured):
    captured.handler.setFormatter(PlainFormatter("%(levelname)s %(name)s: %(message)s"))
    with schema_context("acme"):
        SyncRun.objects.create(task_id="t-2", started_at=timezone.now())

    sync_tenant.apply(task_id="t-2", headers={"_schema_name": "acme"})

    [line] = [text for text in captured.lines() if RUN_REDELIVERED in text]
    assert line.startswith("WARNING scheduling.services: Sync run ")
    assert line.endswith(f"{RUN_REDELIVERED} [acme scheduling.sync_tenant t-2]")


def _log_format(env: dict[str, str]) -> subprocess.CompletedProcess:
    return base_setting("LOG_FORMAT", {"LOG_FORMAT": "", **env})


def test_the_log_format_defaults_to_json_in_production_and_plain_in_development():
    assert _log_format({"DEBUG": "false"}).stdout.strip() == "json"
    assert _log_format({"DEBUG": "true"}).stdout.strip() == "plain"
    assert _log_format({"DEBUG": "true", "LOG_FORMAT": "json"}).stdout.strip() == "json"


def test_an_unknown_log_format_stops_start_up_naming_the_variable():
    result = _log_format({"DEBUG": "false", "LOG_FORMAT": "xml"})

    assert result.returncode != 0
    assert "LOG_FORMAT must be json or plain, got 'xml'." in result.stderr
