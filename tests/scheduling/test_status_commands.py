"""setup_schedules and schedules_status, as an operator runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.platform.schedules import schedule_disable
from tests.helpers import run_manage
from tests.scheduling.status_landscape import status_landscape_create

pytestmark = pytest.mark.django_db

PLATFORM = ["platform:cleanup", "platform:heartbeat", "platform:reconcile"]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _command(*args: str, capsys) -> str:
    call_command(*args)
    return capsys.readouterr().out


def _status(*args: str, capsys) -> list[dict]:
    return json.loads(_command("schedules_status", "--json", *args, capsys=capsys))


# --- setup_schedules ----------------------------------------------------------


def test_setup_creates_the_platform_schedules_and_a_second_run_writes_nothing(capsys):
    first = _command("setup_schedules", capsys=capsys)
    stamp = PeriodicTasks.last_change()
    changed = dict(PeriodicTask.objects.values_list("name", "date_changed"))

    second = _command("setup_schedules", capsys=capsys)

    assert first.splitlines() == [
        "created platform:heartbeat",
        "created platform:cleanup",
        "created platform:reconcile",
    ]
    assert second.splitlines() == [
        "unchanged platform:heartbeat",
        "unchanged platform:cleanup",
        "unchanged platform:reconcile",
    ]
    assert PeriodicTasks.last_change() == stamp
    assert dict(PeriodicTask.objects.values_list("name", "date_changed")) == changed
    tasks = {t.name: t for t in PeriodicTask.objects.select_related("interval", "crontab")}
    assert tasks["platform:heartbeat"].interval.every == 60
    assert tasks["platform:reconcile"].interval.every == 3600
    cron = tasks["platform:cleanup"].crontab
    assert (cron.minute, cron.hour, str(cron.timezone)) == ("15", "3", "UTC")


def test_setup_repairs_a_hand_edit_but_keeps_an_operators_disable(capsys):
    _command("setup_schedules", capsys=capsys)
    PeriodicTask.objects.filter(name="platform:reconcile").update(
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    )
    schedule_disable(name="platform:heartbeat")

    lines = _command("setup_schedules", capsys=capsys).splitlines()

    assert lines == [
        "unchanged platform:heartbeat",
        "unchanged platform:cleanup",
        "updated platform:reconcile (schedule)",
    ]
    assert PeriodicTask.objects.get(name="platform:reconcile").interval.every == 3600
    assert PeriodicTask.objects.get(name="platform:heartbeat").enabled is False


# --- schedules_status ---------------------------------------------------------


@pytest.fixture
def landscape(tenant_a, tenant_b):
    status_landscape_create(globex=tenant_b, now=NOW)


def test_status_json_has_one_object_per_task(landscape, capsys):
    rows = {row["name"]: row for row in _status(capsys=capsys)}

    assert set(rows) >= {
        *PLATFORM,
        "tenant:acme:sync",
        "tenant:globex:sync",
        "globex nightly",
        "legacy",
    }
    assert len(rows) == PeriodicTask.objects.count()
    acme = rows["tenant:acme:sync"]
    assert set(acme) == {
        "name",
        "task",
        "tenant",
        "kind",
        "enabled",
        "schedule",
        "last_run_at",
        "total_run_count",
        "next_run_at",
        "one_off",
        "queue",
        "priority",
        "expires",
        "expire_seconds",
        "sync_runs",
    }
    assert (acme["tenant"], acme["kind"], acme["enabled"], acme["schedule"]) == (
        "acme",
        "sync",
        True,
        "every 15 minutes",
    )
    assert acme["sync_runs"] == {"ok": 2, "failed": 1, "last_status": "failed"}
    assert datetime.fromisoformat(acme["next_run_at"]).tzinfo is not None
    nightly = rows["globex nightly"]  # no link row: the tenant comes from the header
    assert (nightly["tenant"], nightly["kind"]) == ("globex", "sync")
    assert nightly["sync_runs"] == {"ok": 1, "failed": 0, "last_status": "ok"}
    heartbeat = rows["platform:heartbeat"]
    assert (heartbeat["tenant"], heartbeat["kind"], heartbeat["sync_runs"]) == (
        None,
        "heartbeat",
        None,
    )
    assert (rows["legacy"]["tenant"], rows["legacy"]["kind"]) == (None, None)


def test_status_for_one_tenant_shows_nothing_of_another(landscape, capsys):
    rows = _status("--tenant", "acme", capsys=capsys)

    names = [row["name"] for row in rows]
    assert "tenant:acme:sync" in names
    assert {row["tenant"] for row in rows} == {"acme"}
    assert not any("globex" in name or name.startswith("platform:") for name in names)


def test_the_table_is_aligned_under_its_headers(landscape, capsys):
    lines = _command("schedules_status", "--tenant", "globex", capsys=capsys).splitlines()

    header, rows, footer = lines[0], lines[1:-1], lines[-1]
    assert header.split()[:3] == ["NAME", "TENANT", "KIND"]
    tenant_column = header.index("TENANT")
    assert [row[tenant_column:].split()[0] for row in rows] == ["globex"] * len(rows)
    assert any(row.startswith("globex nightly ") for row in rows)
    assert "1 ok, 0 failed, last ok" in "\n".join(rows)
    assert footer == f"{len(rows)} task(s)."


def test_an_unknown_tenant_is_one_line_and_exit_code_2(tenant_a):
    with pytest.raises(CommandError) as raised:
        call_command("schedules_status", "--tenant", "nope")

    assert raised.value.returncode == 2
    assert str(raised.value) == "No tenant with slug 'nope'."


def test_the_process_exits_2_with_the_error_on_stderr():
    result = run_manage("schedules_status", "--tenant", "nope", "--json")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["CommandError: No tenant with slug 'nope'."]
