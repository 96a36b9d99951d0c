"""schedules_export and schedules_import: a faithful round trip, all or nothing, idempotent."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)
from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent
from scheduling.jobs import RECONCILE, SYNC
from scheduling.platform.models import ScheduleState, TenantTask
from scheduling.platform.policies import (
    schedule_pause,
    schedule_pause_get,
    schedule_policy_set,
    schedule_resume,
)
from scheduling.platform.schedules import Clocked, Crontab, Interval, Solar, schedule_create
from scheduling.services import user_schedule_update
from tenants.accounts.models import User
from tenants.models import Domain, Tenant
from tenants.services import tenant_pause
from tests.helpers import ROOT
from tests.helpers import test_database_url as source_database_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def landscape(tenant_a, tenant_b, admin_a):
    """The platform's schedules and operators' ones of every kind; acme (Europe/Berlin) with a
    nightly sync and a user with digests on; globex paused."""
    call_command("setup_schedules", stdout=io.StringIO())
    schedule_create(
        name="acme nightly",
        task_name=SYNC.task_name,
        tenant=tenant_a,
        when=Crontab(minute="0", hour="2", timezone="Europe/Berlin"),
    )
    schedule_create(
        name="ops reconcile",
        task_name=RECONCILE.task_name,
        when=Interval(seconds=600),
        queue="ops",
        priority=3,
        expire_seconds=300,
        description="often, on the ops queue",
    )
    schedule_create(
        name="new year reconcile",
        task_name=RECONCILE.task_name,
        when=Clocked(datetime(2099, 1, 1, tzinfo=UTC)),
    )
    schedule_create(
        name="sunrise reconcile",
        task_name=RECONCILE.task_name,
        when=Solar(event="sunrise", latitude=52.52, longitude=13.405),
        enabled=False,
    )
    with schema_context("acme"):
        user_schedule_update(user=admin_a, frequency="daily", hour=9, timezone_name="UTC")
    tenant_pause(tenant=tenant_b)


def _export() -> dict:
    out = io.StringIO()
    call_command("schedules_export", stdout=out)
    return json.loads(out.getvalue())


def _import(document: dict | str, *args: str) -> list[str]:
    text = document if isinstance(document, str) else json.dumps(document)
    out = io.StringIO()
    sys_stdin, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        call_command("schedules_import", "-", *args, stdout=out)
    finally:
        sys.stdin = sys_stdin
    return out.getvalue().splitlines()


def _entry(document: dict, name: str) -> dict:
    lists = [document["platform"], *(tenant["tasks"] for tenant in document["tenants"])]
    return next(entry for tasks in lists for entry in tasks if entry["name"] == name)


def _tenant(document: dict, slug: str) -> dict:
    return next(tenant for tenant in document["tenants"] if tenant["slug"] == slug)


def _snapshot() -> dict:
    """Everything an import could touch, as stored."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace ORDER BY nspname")
        schemas = [name for (name,) in cursor.fetchall()]
    models = [
        PeriodicTask,
        IntervalSchedule,
        CrontabSchedule,
        SolarSchedule,
        ClockedSchedule,
        Tenant,
        Domain,
        TenantTask,
        ScheduleState,
    ]
    return {
        **{model.__name__: list(model.objects.order_by("pk").values()) for model in models},
        "schemas": schemas,
        "beat_changed": PeriodicTasks.last_change(),
        "audit_events": AuditEvent.objects.count(),
    }


def _initech(**changes) -> dict:
    """A tenant the database does not have yet, with an operator schedule of its own."""
    return {
        "slug": "initech",
        "name": "Initech",
        "timezone": "America/Chicago",
        "sync_interval": 1800,
        "status": "active",
        "tasks": [
            {
                "name": "initech weekly",
                "task": SYNC.task_name,
                "schedule": {"type": "crontab", "minute": "0", "hour": "6", "day_of_week": "1"},
                "headers": {"_schema_name": "initech"},
            }
        ],
        **changes,
    }


# --- Export ---------------------------------------------------------------------------


def test_the_export_holds_every_task_once_under_the_platform_or_its_tenant(landscape):
    document = _export()

    assert (document["format"], document["version"]) == ("scheduler-platform/schedules", 1)
    listed = [entry["name"] for entry in document["platform"]]
    listed += [entry["name"] for tenant in document["tenants"] for entry in tenant["tasks"]]
    assert sorted(listed) == sorted(PeriodicTask.objects.values_list("name", flat=True))
    assert [entry["name"] for entry in _tenant(document, "acme")["tasks"]] == [
        "acme nightly",
        "tenant:acme:digests",
        "tenant:acme:sync",
    ]
    assert {key: value for key, value in _tenant(document, "globex").items() if key != "tasks"} == {
        "slug": "globex",
        "name": "Globex",
        "timezone": "America/New_York",
        "sync_interval": 900,
        "status": "paused",
    }
    assert _entry(document, "ops reconcile") == {
        "name": "ops reconcile",
        "task": RECONCILE.task_name,
        "schedule": {"type": "interval", "seconds": 600},
        "args": [],
        "kwargs": {},
        "headers": {},
        "enabled": True,
        "one_off": False,
        "start_time": None,
        "expires": None,
        "expire_seconds": 300,
        "description": "often, on the ops queue",
        "queue": "ops",
        "priority": 3,
        "policy": {
            "overlap": "skip",
            "catchup_window": settings.SCHEDULER_CATCHUP_WINDOW,
            "run_all": False,
            "jitter": None,
            "pause_note": None,
        },
    }
    assert _entry(document, "acme nightly")["schedule"] == {
        "type": "crontab",
        "minute": "0",
        "hour": "2",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "Europe/Berlin",
    }
    assert _entry(document, "new year reconcile")["schedule"] == {
        "type": "clocked",
        "at": "2099-01-01T00:00:00+00:00",
    }
    assert _entry(document, "tenant:acme:digests")["start_time"] is not None


def test_the_export_leaves_secrets_behind(landscape, tenant_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(
        source_kind="http_json",
        source_url="https://feed.example.test/records",
        source_token="tok-do-not-export",
        webhook_url="https://hooks.example.test/acme",
        webhook_secret="whsec-do-not-export",
    )
    out = io.StringIO()

    call_command("schedules_export", stdout=out)

    assert "do-not-export" not in out.getvalue()
    assert "example.test" not in out.getvalue()


def test_a_task_of_a_tenant_that_is_gone_is_left_out_and_named(landscape, tmp_path):
    PeriodicTask.objects.create(
        name="ghost sync",
        task=SYNC.task_name,
        headers='{"_schema_name": "ghost"}',
        interval=IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS),
    )
    err = io.StringIO()

    call_command("schedules_export", "--output", str(tmp_path / "out.json"), stderr=err)

    assert "ghost sync" not in (tmp_path / "out.json").read_text()
    assert err.getvalue().splitlines() == [
        "left out ghost sync: its _schema_name header names no tenant"
    ]


# --- Import: applying -------------------------------------------------------------------


def test_the_export_imported_into_its_own_database_changes_nothing(landscape):
    before = _snapshot()

    lines = _import(_export())

    assert lines[-1] == "0 created, 0 updated, 12 unchanged, 0 skipped."
    assert _snapshot() == before  # not a single write: beat does not even reload


def test_an_import_creates_updates_and_leaves_the_rest_alone(landscape):
    document = _export()
    acme = _tenant(document, "acme")
    acme["status"], acme["sync_interval"] = "paused", 1800
    _entry(document, "tenant:acme:sync").update(
        enabled=False, schedule={"type": "interval", "seconds": 1800}
    )
    _entry(document, "acme nightly")["schedule"]["hour"] = "3"
    document["platform"] = [e for e in document["platform"] if e["name"] != "ops reconcile"]
    document["tenants"].append(_initech())
    ops_reconcile = PeriodicTask.objects.filter(name="ops reconcile").values().get()

    lines = _import(document)

    assert "updated tenant acme (status, sync_interval)" in lines
    assert "updated tenant:acme:sync (enabled, schedule)" in lines
    assert "updated acme nightly (schedule)" in lines
    assert "updated tenant:acme:digests (enabled)" in lines  # paused with its tenant
    assert lines[-4:] == [
        "created tenant initech",
        "created initech weekly",
        "created tenant:initech:sync",
        "3 created, 4 updated, 7 unchanged, 0 skipped.",
    ]
    assert PeriodicTask.objects.get(name="acme nightly").crontab.hour == "3"
    assert Tenant.objects.get(schema_name="acme").status == "paused"
    # Not in the file, so left as it was: an import never deletes.
    assert PeriodicTask.objects.filter(name="ops reconcile").values().get() == ops_reconcile


def test_a_new_tenant_gets_its_schema_and_domain_but_no_users(landscape):
    document = _export()
    document["tenants"].append(_initech())

    _import(document)

    initech = Tenant.objects.get(schema_name="initech")
    assert (initech.name, initech.timezone, initech.sync_interval) == (
        "Initech",
        "America/Chicago",
        timedelta(minutes=30),
    )
    assert Domain.objects.get(tenant=initech).domain == "initech.localhost"
    with schema_context("initech"):
        assert User.objects.count() == 0
    weekly = PeriodicTask.objects.get(name="initech weekly")
    assert json.loads(weekly.headers) == {"_schema_name": "initech"}
    assert AuditEvent.objects.filter(actor_label="system: schedules_import").exists()


def test_a_second_import_of_the_same_file_changes_nothing(landscape):
    document = _export()
    _entry(document, "acme nightly")["schedule"]["hour"] = "4"
    document["tenants"].append(_initech(status="paused"))
    first = _import(document)
    before = _snapshot()

    second = _import(document)

    assert first[-1] == "3 created, 1 updated, 11 unchanged, 0 skipped."
    assert second[-1] == "0 created, 0 updated, 15 unchanged, 0 skipped."
    assert _snapshot() == before


def test_a_dry_run_reports_the_same_and_changes_nothing(landscape):
    document = _export()
    _entry(document, "ops reconcile")["priority"] = 9
    document["tenants"].append(_initech())
    before = _snapshot()

    dry = _import(document, "--dry-run")

    assert _snapshot() == before
    assert "initech" not in before["schemas"]
    assert dry[-1] == "Dry run: nothing was changed."
    assert _import(document) == dry[:-1]


def test_it_reads_a_file_too(landscape, tmp_path):
    path = tmp_path / "schedules.json"
    call_command("schedules_export", "--output", str(path))
    out = io.StringIO()

    call_command("schedules_import", str(path), stdout=out)

    assert out.getvalue().splitlines()[-1] == "0 created, 0 updated, 12 unchanged, 0 skipped."


# --- Import: refusing ---------------------------------------------------------------------


def _broken_json(document: dict) -> str:
    return json.dumps(document)[:-40]


def _wrong_version(document: dict) -> dict:
    return {**document, "version": 2}


def _unknown_task(document: dict) -> dict:
    _entry(document, "ops reconcile")["task"] = "os.system"
    return document


def _unknown_tenant_time_zone(document: dict) -> dict:
    _tenant(document, "acme")["timezone"] = "Mars/Olympus"
    return document


def _unknown_crontab_time_zone(document: dict) -> dict:
    _entry(document, "acme nightly")["schedule"]["timezone"] = "Mars/Olympus"
    return document


def _one_bad_item_among_good_ones(document: dict) -> dict:
    document["tenants"].append(_initech())
    _entry(document, "acme nightly")["schedule"]["hour"] = "5"
    _entry(document, "new year reconcile")["priority"] = 300
    return document


def _duplicate_name(document: dict) -> dict:
    _tenant(document, "globex")["tasks"].append({**_entry(document, "ops reconcile")})
    return document


def _another_tenants_task(document: dict) -> dict:
    _entry(document, "acme nightly")["headers"] = {"_schema_name": "globex"}
    return document


def _a_platform_job_under_a_tenant(document: dict) -> dict:
    entry = _entry(document, "ops reconcile")
    document["platform"].remove(entry)
    _tenant(document, "acme")["tasks"].append({**entry, "headers": {"_schema_name": "acme"}})
    return document


def _a_tenant_task_out_of_step_with_its_tenant(document: dict) -> dict:
    _entry(document, "tenant:acme:sync")["schedule"]["seconds"] = 60
    return document


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        (_broken_json, ["$: not valid JSON ("]),
        (_wrong_version, ["$.version: 2 is not a version this platform reads."]),
        (_unknown_task, ["$.platform[1].task: 'os.system' is not a registered job ("]),
        (
            _unknown_tenant_time_zone,
            ["$.tenants[0].timezone: Mars/Olympus is not an IANA time zone name"],
        ),
        (
            _unknown_crontab_time_zone,
            ["$.tenants[0].tasks[0].schedule: 'Mars/Olympus' is not an IANA time zone"],
        ),
        (
            _one_bad_item_among_good_ones,
            ["$.platform[0].priority: priority must be a whole number from 0 to 255; got 300."],
        ),
        (
            _duplicate_name,
            ["$.tenants[1].tasks[1].name: 'ops reconcile' is also at $.platform[1]."],
        ),
        (
            _another_tenants_task,
            [
                "$.tenants[0].tasks[0].headers: names tenant 'globex', but the task is listed "
                "under 'acme'; a tenant's task runs in that tenant's schema only."
            ],
        ),
        (
            _a_platform_job_under_a_tenant,
            ["$.tenants[0].tasks[3].task: scheduling.reconcile is a platform job: list it there."],
        ),
        (
            _a_tenant_task_out_of_step_with_its_tenant,
            [
                "$.tenants[0].tasks[2].schedule: tenant:acme:sync follows its tenant's settings: "
                'expected {"type": "interval", "seconds": 900}.'
            ],
        ),
    ],
)
def test_a_bad_file_changes_nothing_and_says_where(landscape, change, problems):
    document = change(_export())
    before = _snapshot()

    with pytest.raises(CommandError) as refused:
        _import(document)

    lines = str(refused.value).splitlines()
    assert lines[0] == f"{len(problems)} problem(s); nothing was changed:"
    assert len(lines[1:]) == len(problems)
    for line, problem in zip(lines[1:], problems, strict=True):
        assert line.startswith(problem)
    assert refused.value.returncode == 2
    assert _snapshot() == before


def test_an_interval_below_the_minimum_is_refused(landscape, settings):
    settings.TENANT_SYNC_INTERVAL_MIN = timedelta(minutes=1)
    document = _export()
    _tenant(document, "acme")["sync_interval"] = 30
    _entry(document, "tenant:acme:sync")["schedule"]["seconds"] = 30
    before = _snapshot()

    with pytest.raises(CommandError) as refused:
        _import(document)

    assert str(refused.value).splitlines()[1:] == [
        "$.tenants[0].sync_interval: The sync interval must be between 1 minute and 1 week."
    ]
    assert _snapshot() == before


def test_a_failure_after_a_tenant_was_created_leaves_no_schema_row_or_task(landscape):
    # initech's own schedules can only be checked once it exists: its creation comes first.
    document = _export()
    bad = _initech()
    bad["tasks"][0]["args"] = ["surplus"]
    document["tenants"].append(bad)
    before = _snapshot()

    with pytest.raises(CommandError) as refused:
        _import(document)

    assert (
        str(refused.value)
        .splitlines()[1]
        .startswith("$.tenants[2].tasks[0].args: These arguments do not fit scheduling.sync_tenant")
    )
    assert _snapshot() == before
    assert "initech" not in _snapshot()["schemas"]
    assert not Tenant.objects.filter(schema_name="initech").exists()
    assert not PeriodicTask.objects.filter(name__contains="initech").exists()


# --- Round trip into an empty database ------------------------------------------------------


def _database_url(name: str) -> str:
    return urlunsplit(urlsplit(source_database_url())._replace(path=f"/{name}"))


def _manage(database: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(database),
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def empty_database():
    name = f"{settings.DATABASES['default']['NAME']}_import_{uuid.uuid4().hex[:8]}"
    quoted = connection.ops.quote_name(name)
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {quoted} TEMPLATE template0")
    try:
        yield name
    finally:
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


def _comparable(rows: list[dict]) -> dict[str, dict]:
    """Status rows by name without run counts and times, which a new database cannot have."""
    ignored = {"last_run_at", "total_run_count", "next_run_at", "sync_runs"}
    return {row["name"]: {k: v for k, v in row.items() if k not in ignored} for row in rows}


@pytest.mark.slow
def test_export_then_import_into_an_empty_database_gives_the_same_schedules(
    landscape, empty_database, capsys
):
    exported = _export()
    call_command("schedules_status", "--json")
    source = _comparable(json.loads(capsys.readouterr().out))
    _manage(empty_database, "migrate", "--verbosity", "0")

    report = _manage(empty_database, "schedules_import", "-", stdin=json.dumps(exported))

    target = _comparable(json.loads(_manage(empty_database, "schedules_status", "--json")))
    # The digest dispatcher follows users with digests on, and users do not travel.
    assert source.pop("tenant:acme:digests")["enabled"] is True
    assert target == source
    assert "skipped tenant:acme:digests (made when a user turns digests on)" in report
    assert report.splitlines()[-1] == "11 created, 0 updated, 0 unchanged, 1 skipped."
    again = json.loads(_manage(empty_database, "schedules_export"))
    _tenant(exported, "acme")["tasks"].remove(_entry(exported, "tenant:acme:digests"))
    assert {**again, "exported_at": None} == {**exported, "exported_at": None}


@pytest.mark.parametrize("latitude", ["abc", True, 1e400, {}])
def test_a_stored_solar_task_given_a_bad_latitude_is_a_problem_not_a_crash(landscape, latitude):
    document = _export()
    entry = _entry(document, "sunrise reconcile")
    entry["schedule"]["latitude"] = latitude
    before = _snapshot()

    with pytest.raises(CommandError) as refused:
        _import(document)

    at = f"$.platform[{document['platform'].index(entry)}].schedule"
    assert [line.split(":")[0] for line in str(refused.value).splitlines()[1:]] == [at]
    assert "latitude" in str(refused.value)
    assert _snapshot() == before


def test_a_tenant_keeps_its_own_name_and_the_report_says_so(landscape, tenant_a):
    document = _export()
    _tenant(document, "acme")["name"] = "Acme Renamed"

    lines = _import(document)

    tenant_a.refresh_from_db()
    assert tenant_a.name != "Acme Renamed"
    assert f"unchanged tenant acme; its name stays {tenant_a.name!r}, not 'Acme Renamed'" in lines


def test_stdin_that_is_not_utf8_is_refused_with_a_clear_error(landscape, monkeypatch):
    before = _snapshot()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"format": "\xff"}')))

    with pytest.raises(CommandError, match=r"^-: not UTF-8 text\.$") as refused:
        call_command("schedules_import", "-", stdout=io.StringIO())

    assert refused.value.returncode == 2
    assert _snapshot() == before


# --- Policies and pauses ---------------------------------------------------------------------


def _task(name: str) -> PeriodicTask:
    return PeriodicTask.objects.get(name=name)


def _policy(name: str) -> dict:
    """The task's policies and pause note as stored, defaults for a missing state row."""
    state = ScheduleState.objects.filter(pk=_task(name).pk).values().first() or {
        "overlap": "skip",
        "catchup_window": settings.SCHEDULER_CATCHUP_WINDOW,
        "run_all": False,
        "jitter": None,
    }
    pause = schedule_pause_get(periodic_task_id=_task(name).pk)
    values = {key: state[key] for key in ("overlap", "catchup_window", "run_all", "jitter")}
    return {**values, "pause_note": pause.note if pause else None}


def _states() -> list[dict]:
    return list(ScheduleState.objects.order_by("pk").values())


@pytest.fixture
def with_policies(landscape):
    """Policies on an operator schedule, a platform schedule and a per-tenant one; acme's
    nightly schedule and sync paused with notes."""
    schedule_policy_set(
        _task("ops reconcile"), overlap="allow_all", catchup_window=120, run_all=True, jitter=30
    )
    schedule_policy_set(_task("tenant:acme:sync"), overlap="buffer_one", jitter=0)
    schedule_pause(_task("acme nightly"), note="Waiting for the vendor's new feed.")
    schedule_pause(_task("tenant:acme:sync"), note="Source down, ticket 42.")


def test_the_export_holds_each_tasks_policy_and_its_pause_note_while_paused(with_policies):
    schedule_pause(_task("sunrise reconcile"), note="Solar events are under review.")
    schedule_pause(_task("new year reconcile"), note="stale: enabled again by hand")
    PeriodicTask.objects.filter(name="new year reconcile").update(enabled=True)

    document = _export()

    assert _entry(document, "ops reconcile")["policy"] == {
        "overlap": "allow_all",
        "catchup_window": 120,
        "run_all": True,
        "jitter": 30,
        "pause_note": None,
    }
    assert _entry(document, "tenant:acme:sync")["policy"] == {
        "overlap": "buffer_one",
        "catchup_window": settings.SCHEDULER_CATCHUP_WINDOW,
        "run_all": False,
        "jitter": 0,
        "pause_note": "Source down, ticket 42.",
    }
    assert _entry(document, "tenant:acme:sync")["enabled"] is False
    assert _entry(document, "acme nightly")["policy"]["pause_note"] == (
        "Waiting for the vendor's new feed."
    )
    assert _entry(document, "sunrise reconcile")["policy"]["pause_note"] == (
        "Solar events are under review."
    )
    # A note on a task enabled since is no pause.
    assert _entry(document, "new year reconcile")["policy"]["pause_note"] is None


def test_the_export_reads_the_policies_of_all_tasks_in_one_query(with_policies):
    with CaptureQueriesContext(connection) as queries:
        _export()

    read = [q["sql"] for q in queries.captured_queries if "schedulestate" in q["sql"]]
    assert len(read) == 1


def test_policies_and_pauses_travel_into_a_database_that_has_others(with_policies):
    document = _export()
    # This database then goes its own way.
    schedule_policy_set(_task("ops reconcile"), overlap="skip", catchup_window=7200, jitter=None)
    schedule_policy_set(_task("acme nightly"), run_all=True)
    schedule_resume(_task("acme nightly"))
    schedule_pause(_task("ops reconcile"), note="Ops queue is being drained.")
    schedule_pause(_task("sunrise reconcile"), note="Disabled and paused here only.")
    schedule_resume(_task("tenant:acme:sync"))
    schedule_pause(_task("tenant:acme:sync"), note="Another reason, here.")

    lines = _import(document)

    assert "updated ops reconcile (enabled, policy)" in lines
    assert "updated acme nightly (enabled, policy)" in lines
    assert "updated sunrise reconcile (policy)" in lines  # disabled still, but not paused
    assert "updated tenant:acme:sync (policy)" in lines
    assert lines[-1] == "0 created, 4 updated, 8 unchanged, 0 skipped."
    assert {**_export(), "exported_at": None} == {**document, "exported_at": None}
    assert _policy("sunrise reconcile")["pause_note"] is None
    assert _task("sunrise reconcile").enabled is False
    assert _policy("tenant:acme:sync")["pause_note"] == "Source down, ticket 42."
    assert _task("tenant:acme:sync").enabled is False
    assert AuditEvent.objects.filter(
        actor_label="system: schedules_import", target="ops reconcile"
    ).exists()
    before = _snapshot()
    assert _import(document)[-1] == "0 created, 0 updated, 12 unchanged, 0 skipped."
    assert _snapshot() == before


def test_a_new_database_gets_the_policies_and_pauses_of_new_tasks(with_policies):
    document = _export()
    initech = _initech()
    initech["tasks"][0]["enabled"] = False
    initech["tasks"][0]["policy"] = {
        "overlap": "buffer_one",
        "catchup_window": 0,
        "run_all": False,
        "jitter": 5,
        "pause_note": "Starts once the contract is signed.",
    }
    initech["tasks"].append(
        {
            "name": "tenant:initech:sync",
            "task": SYNC.task_name,
            "schedule": {"type": "interval", "seconds": 1800},
            "headers": {"_schema_name": "initech"},
            "enabled": False,
            "policy": {
                "overlap": "skip",
                "catchup_window": 60,
                "run_all": False,
                "jitter": None,
                "pause_note": "No source configured yet.",
            },
        }
    )
    document["tenants"].append(initech)

    _import(document)

    assert _policy("initech weekly") == initech["tasks"][0]["policy"]
    assert _task("initech weekly").enabled is False
    assert _policy("tenant:initech:sync") == initech["tasks"][1]["policy"]
    assert _task("tenant:initech:sync").enabled is False
    assert Tenant.objects.get(schema_name="initech").status == "active"


def test_a_file_without_policies_leaves_policies_and_pauses_alone(with_policies):
    document = _export()
    for tasks in [document["platform"], *(t["tasks"] for t in document["tenants"])]:
        for entry in tasks:
            del entry["policy"]
    # As a file from before pauses would have them: enabled, as their tenant allows.
    _entry(document, "acme nightly")["enabled"] = True
    _entry(document, "tenant:acme:sync")["enabled"] = True
    schedule_policy_set(_task("ops reconcile"), overlap="buffer_one")
    states, before = _states(), _snapshot()

    lines = _import(document)

    assert "unchanged acme nightly; it stays paused, as the file has no policy" in lines
    assert "unchanged tenant:acme:sync; it stays paused, as the file has no policy" in lines
    assert lines[-1] == "0 created, 0 updated, 12 unchanged, 0 skipped."
    assert _states() == states
    assert _snapshot() == before
    assert _policy("ops reconcile")["overlap"] == "buffer_one"


def _pause_of(document: dict, name: str, note) -> dict:
    _entry(document, name)["policy"]["pause_note"] = note
    return document


def _policy_without(document: dict, name: str, key: str) -> dict:
    del _entry(document, name)["policy"][key]
    return document


def _policy_of(document: dict, name: str, **values) -> dict:
    _entry(document, name)["policy"].update(values)
    return document


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        (
            lambda d: _policy_of(d, "ops reconcile", overlap="sometimes"),
            [
                "{ops}.policy.overlap: The overlap policy must be one of skip, buffer_one, "
                "allow_all, not 'sometimes'."
            ],
        ),
        (
            lambda d: _policy_of(d, "ops reconcile", catchup_window="60", jitter=1.5),
            [
                "{ops}.policy.catchup_window: The catch-up window must be a whole number of "
                "seconds.",
                "{ops}.policy.jitter: The jitter must be a whole number of seconds.",
            ],
        ),
        (
            lambda d: _policy_of(d, "ops reconcile", catchup_window=-1, jitter=10**9),
            [
                "{ops}.policy.catchup_window: The catch-up window must be from 0 to 2592000 "
                "seconds, not -1.",
                "{ops}.policy.jitter: The jitter must be from 0 to 86400 seconds, not 1000000000.",
            ],
        ),
        (
            lambda d: _policy_of(d, "ops reconcile", run_all="yes"),
            ["{ops}.policy.run_all: run_all must be True or False."],
        ),
        (
            lambda d: _policy_of(d, "ops reconcile", retries=3),
            ["{ops}.policy.retries: is not a key this format has."],
        ),
        (
            lambda d: _policy_without(d, "ops reconcile", "jitter"),
            ["{ops}.policy.jitter: is missing."],
        ),
        (
            lambda d: _entry(d, "ops reconcile").update(policy="allow_all") or d,
            ["{ops}.policy: must be an object."],
        ),
        (
            lambda d: _pause_of(d, "sunrise reconcile", "   "),
            ["{sunrise}.policy.pause_note: Say why the schedule is paused."],
        ),
        (
            lambda d: _pause_of(d, "sunrise reconcile", 42),
            ["{sunrise}.policy.pause_note: must be a string or null; got 42."],
        ),
        (
            lambda d: _pause_of(d, "tenant:acme:sync", 42),  # paused, so enabled false is right
            ["$.tenants[0].tasks[2].policy.pause_note: must be a string or null; got 42."],
        ),
        (
            lambda d: _pause_of(d, "sunrise reconcile", "x" * 501),
            ["{sunrise}.policy.pause_note: The note can be at most 500 characters (it has 501)."],
        ),
        (
            lambda d: _pause_of(d, "ops reconcile", "Paused, yet enabled."),
            ["{ops}.enabled: must be false: the policy says the task is paused."],
        ),
        (
            lambda d: _pause_of(d, "tenant:acme:digests", "Paused, yet enabled."),
            ["$.tenants[0].tasks[1].enabled: must be false: the policy says the task is paused."],
        ),
        (
            lambda d: _entry(d, "tenant:acme:sync").update(enabled=True) or d,
            ["$.tenants[0].tasks[2].enabled: must be false: the policy says the task is paused."],
        ),
    ],
)
def test_a_bad_policy_changes_nothing_and_says_where(with_policies, change, problems):
    document = change(_export())
    at = {
        name.split()[0]: f"$.platform[{document['platform'].index(_entry(document, name))}]"
        for name in ("ops reconcile", "sunrise reconcile")
    }
    before = _snapshot()

    with pytest.raises(CommandError) as refused:
        _import(document)

    lines = str(refused.value).splitlines()
    assert lines[1:] == [problem.format(**at) for problem in problems]
    assert _snapshot() == before


def test_a_dry_run_of_policies_reports_them_exactly_and_changes_nothing(with_policies):
    document = _export()
    _policy_of(document, "ops reconcile", overlap="skip")
    _entry(document, "sunrise reconcile")["policy"]["pause_note"] = "Under review."
    _pause_of(document, "tenant:acme:sync", None)
    _entry(document, "tenant:acme:sync")["enabled"] = True
    before = _snapshot()

    dry = _import(document, "--dry-run")

    assert _snapshot() == before
    assert "updated ops reconcile (policy)" in dry
    assert "updated sunrise reconcile (policy)" in dry
    assert "updated tenant:acme:sync (enabled, policy)" in dry
    assert dry[-2:] == [
        "0 created, 3 updated, 9 unchanged, 0 skipped.",
        "Dry run: nothing was changed.",
    ]
    assert _import(document) == dry[:-1]
    assert _task("tenant:acme:sync").enabled is True  # acme is active
    assert _policy("sunrise reconcile")["pause_note"] == "Under review."


def test_a_tenant_task_paused_in_the_file_stays_as_its_tenant_allows_and_others_are_untouched(
    landscape, tenant_b
):
    schedule_pause(_task("tenant:globex:sync"), note="Globex's own pause, here only.")
    document = _export()
    globex = _tenant(document, "globex")
    document["tenants"].remove(globex)  # globex is not in the file
    sync = _entry(document, "tenant:acme:sync")
    sync["enabled"] = False
    sync["policy"] |= {"pause_note": "Vendor outage.", "run_all": True}
    digests = _entry(document, "tenant:acme:digests")
    digests["enabled"] = False
    digests["policy"]["pause_note"] = "No digests this week."
    globex_tasks = list(
        PeriodicTask.objects.filter(name__contains="globex").order_by("pk").values()
    )
    globex_states = list(
        ScheduleState.objects.filter(periodic_task__name__contains="globex").values()
    )

    lines = _import(document)

    assert "updated tenant:acme:sync (enabled, policy)" in lines
    assert "updated tenant:acme:digests (enabled, policy)" in lines
    assert _policy("tenant:acme:sync")["pause_note"] == "Vendor outage."
    assert _policy("tenant:acme:sync")["run_all"] is True
    assert _task("tenant:acme:sync").enabled is False
    assert _task("tenant:acme:digests").enabled is False
    assert Tenant.objects.get(schema_name="acme").status == "active"
    assert (
        list(PeriodicTask.objects.filter(name__contains="globex").order_by("pk").values())
        == globex_tasks
    )
    assert (
        list(ScheduleState.objects.filter(periodic_task__name__contains="globex").values())
        == globex_states
    )

    # The pause lifted by a later file: the tasks run again as acme allows.
    sync["enabled"], sync["policy"]["pause_note"] = True, None
    digests["enabled"], digests["policy"]["pause_note"] = True, None

    lines = _import(document)

    assert "updated tenant:acme:sync (enabled, policy)" in lines
    assert _task("tenant:acme:sync").enabled is True
    assert _task("tenant:acme:digests").enabled is True  # a user of acme wants digests
    assert _policy("tenant:acme:digests")["pause_note"] is None


def test_a_paused_tenant_keeps_its_sync_disabled_when_the_file_lifts_the_pause(landscape):
    schedule_pause(_task("tenant:globex:sync"), note="Paused before the tenant was.")
    document = _export()
    entry = _entry(document, "tenant:globex:sync")
    entry["policy"]["pause_note"] = None

    lines = _import(document)

    assert "updated tenant:globex:sync (policy)" in lines
    assert _policy("tenant:globex:sync")["pause_note"] is None
    assert _task("tenant:globex:sync").enabled is False  # globex itself is paused
