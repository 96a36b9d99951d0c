from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

pytestmark = pytest.mark.django_db


def _drift() -> None:
    """Drift of every kind reconcile repairs: a bulk edit, a hand deletion, an orphan."""
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(enabled=False, headers="{}")
    PeriodicTask.objects.filter(name="tenant:globex:sync").delete()
    PeriodicTask.objects.create(
        name="tenant:gone:sync",
        task="scheduling.sync_tenant",
        interval=IntervalSchedule.objects.create(every=5, period="seconds"),
    )


def _reconcile(*args: str, capsys) -> list[str]:
    call_command("reconcile_schedules", *args)
    return capsys.readouterr().out.splitlines()


def test_it_repairs_every_kind_of_drift_and_says_what_it_did(tenant_a, tenant_b, capsys):
    _drift()
    stamp = PeriodicTasks.last_change()

    lines = _reconcile(capsys=capsys)

    assert lines == [
        "updated tenant:acme:sync (enabled, headers)",
        "created tenant:globex:sync",
        "deleted tenant:gone:sync (no such tenant)",
        "3 change(s).",
    ]
    acme = PeriodicTask.objects.get(name="tenant:acme:sync")
    assert acme.enabled and json.loads(acme.headers) == {"_schema_name": "acme"}
    assert PeriodicTask.objects.get(name="tenant:globex:sync").tenant_link.tenant == tenant_b
    assert not PeriodicTask.objects.filter(name="tenant:gone:sync").exists()
    assert PeriodicTasks.last_change() != stamp  # beat is told
    assert _reconcile(capsys=capsys) == ["0 change(s)."]


def test_a_dry_run_reports_the_same_and_changes_nothing(tenant_a, tenant_b, capsys):
    _drift()
    before = sorted(PeriodicTask.objects.values_list("name", "enabled", "headers"))

    lines = _reconcile("--dry-run", capsys=capsys)

    assert lines == [
        "would be updated tenant:acme:sync (enabled, headers)",
        "would be created tenant:globex:sync",
        "would be deleted tenant:gone:sync (no such tenant)",
        "3 change(s) (dry run).",
    ]
    assert sorted(PeriodicTask.objects.values_list("name", "enabled", "headers")) == before


def test_a_task_renamed_by_hand_is_replaced_not_doubled(tenant_a, capsys):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(name="acme sync (renamed)")

    lines = _reconcile(capsys=capsys)

    assert lines == [
        "created tenant:acme:sync (replaces 'acme sync (renamed)')",
        "1 change(s).",
    ]
    acme_tasks = PeriodicTask.objects.filter(headers__contains='"acme"')
    assert list(acme_tasks.values_list("name", flat=True)) == ["tenant:acme:sync"]
    assert acme_tasks.get().tenant_link.tenant == tenant_a


def test_a_missing_link_row_is_restored(tenant_a, capsys):
    from scheduling.platform.models import TenantTask

    TenantTask.objects.all().delete()

    assert _reconcile(capsys=capsys) == ["updated tenant:acme:sync (tenant link)", "1 change(s)."]
    assert TenantTask.objects.get().tenant == tenant_a
