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


def _operator_sync(tenant, name="nightly-sync"):
    from scheduling.platform.schedules import Interval, schedule_create

    schedule_create(name=name, task_name=SYNC.task_name, when=Interval(seconds=3600), tenant=tenant)
    return PeriodicTask.objects.get(name=name)


def test_deleting_a_tenant_removes_operator_schedules_that_name_it(tenant_a, tenant_b):
    _operator_sync(tenant_a, "acme-nightly")
    _operator_sync(tenant_b, "globex-nightly")

    tenant_delete(tenant=tenant_a)

    assert not PeriodicTask.objects.filter(name="acme-nightly").exists()
    assert PeriodicTask.objects.filter(name="globex-nightly").exists()


def test_reconcile_deletes_tasks_whose_header_names_a_tenant_that_is_gone(tenant_a):
    from scheduling.platform.services import schedules_reconcile

    task = _operator_sync(tenant_a, "left-behind")
    PeriodicTask.objects.filter(pk=task.pk).update(headers=json.dumps({"_schema_name": "gone"}))

    assert schedules_reconcile() == ["deleted left-behind (no such tenant)"]
    assert PeriodicTask.objects.filter(name="tenant:acme:sync").exists()


def test_run_now_sends_the_tasks_own_header_and_arguments(tenant_a, settings):
    import redis

    from scheduling.platform.services import periodic_task_run_now

    task = _operator_sync(tenant_a, "run-me")
    task.queue = "run-now-test"
    task.save()
    broker = redis.Redis.from_url(settings.REDIS.client)
    try:
        task_id = periodic_task_run_now(task=task)
        [raw] = broker.lrange("run-now-test", 0, -1)
    finally:
        broker.delete("run-now-test")

    message = json.loads(raw)
    assert message["headers"]["_schema_name"] == "acme"
    assert message["headers"]["id"] == task_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "os.system"}, "is not a registered job"),
        ({"headers": json.dumps({"_schema_name": "public"})}, "names no tenant"),
        ({"headers": "{}"}, "names no tenant"),
        ({"args": '{"not": "a list"}'}, "must be a JSON list"),
        ({"kwargs": "not json"}, "must be a JSON list"),
    ],
)
def test_run_now_refuses_what_cannot_run(tenant_a, change, message):
    from django.core.exceptions import ValidationError

    from scheduling.platform.services import periodic_task_run_now

    task = _sync_task("acme")
    for key, value in change.items():
        setattr(task, key, value)

    with pytest.raises(ValidationError, match=message):
        periodic_task_run_now(task=task)


@pytest.mark.parametrize("headers", ["[]", "not json", '"text"'])
def test_run_now_refuses_headers_that_are_not_an_object(tenant_a, headers):
    from django.core.exceptions import ValidationError

    from scheduling.platform.schedules import Interval, schedule_create
    from scheduling.platform.services import periodic_task_run_now

    schedule_create(name="beat", task_name="scheduling.beat_heartbeat", when=Interval(seconds=60))
    task = PeriodicTask.objects.get(name="beat")
    task.headers = headers

    with pytest.raises(ValidationError, match="must be a JSON object"):
        periodic_task_run_now(task=task)
