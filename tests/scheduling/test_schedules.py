"""Tenant saves drive their periodic task through the signal and the idempotent service."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling.jobs import SYNC
from scheduling.platform.models import TenantTask
from scheduling.platform.services import sync_schedule_ensure
from tenants.services import tenant_delete, tenant_pause, tenant_resume

pytestmark = pytest.mark.django_db


def _sync_task(slug: str) -> PeriodicTask:
    return PeriodicTask.objects.select_related("interval").get(name=f"tenant:{slug}:sync")


def test_onboarding_creates_the_sync_task_with_the_tenant_header(tenant_a):
    task = _sync_task("acme")

    assert task.task == SYNC.task_name
    assert json.loads(task.headers) == {"_schema_name": "acme"}
    assert (task.interval.every, task.interval.period) == (900, "seconds")
    assert task.enabled is True
    assert TenantTask.objects.get(periodic_task=task).tenant == tenant_a


def test_a_save_that_changes_nothing_writes_nothing(tenant_a):
    before = _sync_task("acme").date_changed
    stamp = PeriodicTasks.last_change()

    tenant_a.name = tenant_a.name  # a no-op edit, saved through the model
    tenant_a.save()
    assert sync_schedule_ensure(tenant=tenant_a).written is False
    assert _sync_task("acme").date_changed == before
    assert PeriodicTasks.last_change() == stamp


def test_a_changed_interval_reaches_the_task(tenant_a):
    tenant_a.sync_interval = timedelta(minutes=5)
    tenant_a.save()

    assert _sync_task("acme").interval.every == 300


def test_pause_disables_and_resume_enables_keeping_the_settings(tenant_a):
    tenant_pause(tenant=tenant_a)
    paused = _sync_task("acme")
    tenant_resume(tenant=tenant_a)

    assert paused.enabled is False and paused.interval.every == 900
    assert _sync_task("acme").enabled is True


def test_delete_removes_the_task_and_its_link(tenant_a, tenant_b):
    tenant_delete(tenant=tenant_a)

    assert not PeriodicTask.objects.filter(name__startswith="tenant:acme:").exists()
    assert list(TenantTask.objects.values_list("tenant__schema_name", flat=True)) == ["globex"]


def test_a_hand_edited_task_is_put_back(tenant_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(
        task="something.else", headers="{}", enabled=False
    )

    change = sync_schedule_ensure(tenant=tenant_a)

    task = _sync_task("acme")
    assert change.describe() == "updated tenant:acme:sync (enabled, headers, task)"
    assert (task.task, json.loads(task.headers), task.enabled) == (
        SYNC.task_name,
        {"_schema_name": "acme"},
        True,
    )


def test_each_tenant_gets_its_own_task(tenant_a, tenant_b):
    headers = {
        link.tenant.schema_name: json.loads(link.periodic_task.headers)["_schema_name"]
        for link in TenantTask.objects.select_related("tenant", "periodic_task")
    }
    assert headers == {"acme": "acme", "globex": "globex"}
