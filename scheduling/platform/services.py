"""Per-tenant periodic tasks in django-celery-beat's tables, kept in step with the tenants.

Every function is idempotent. A call that would change nothing writes nothing:
each write to PeriodicTask makes the stock beat reload every schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.jobs import SYNC, Job
from scheduling.platform.models import TenantTask
from tenants.models import Tenant


def tenant_task_name(*, tenant: Tenant, kind: str) -> str:
    return f"tenant:{tenant.schema_name}:{kind}"


def tenant_headers(*, tenant: Tenant) -> str:
    return json.dumps({"_schema_name": tenant.schema_name})


def interval_schedule_get(*, seconds: int) -> IntervalSchedule:
    # django-celery-beat has no unique constraint here, so duplicates may exist: take the oldest.
    schedule = (
        IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS)
        .order_by("pk")
        .first()
    )
    return schedule or IntervalSchedule.objects.create(
        every=seconds, period=IntervalSchedule.SECONDS
    )


@dataclass(frozen=True)
class TaskChange:
    task: PeriodicTask
    action: str | None  # "created", "updated", or None when nothing was written
    fields: list[str] = field(default_factory=list)

    @property
    def written(self) -> bool:
        return self.action is not None

    def describe(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.task.name}{detail}"


def _task_upsert(*, tenant: Tenant, job: Job, kind: str, fields: dict) -> TaskChange:
    """Create or update the tenant's task of `kind`; returns (task, written)."""
    name = tenant_task_name(tenant=tenant, kind=kind)
    desired = {
        "task": job.task_name,
        "headers": tenant_headers(tenant=tenant),
        "args": "[]",
        "kwargs": "{}",
        "description": job.description,
        **fields,
    }
    task = PeriodicTask.objects.filter(name=name).first()
    action, stale = None, {}
    if task is None:
        task = PeriodicTask.objects.create(name=name, **desired)
        action = "created"
    else:
        stale = {key: value for key, value in desired.items() if getattr(task, key) != value}
        if stale:
            for key, value in stale.items():
                setattr(task, key, value)
            task.save()
            action = "updated"
    note = _link_ensure(tenant=tenant, kind=kind, task=task)
    if note and not (action == "created" and note == "tenant link"):
        action, stale = action or "updated", {**stale, note: None}
    return TaskChange(task=task, action=action, fields=sorted(stale))


def _link_ensure(*, tenant: Tenant, kind: str, task: PeriodicTask) -> str:
    """Link `task` as the tenant's one task of `kind`; returns what was written, or "".

    A task the tenant's link pointed to before (say, renamed by hand in the admin)
    is deleted, so the tenant never has two tasks of one kind running.
    """
    link = TenantTask.objects.filter(tenant=tenant, kind=kind).first()
    if link is not None and link.periodic_task_id == task.pk:
        return ""
    TenantTask.objects.filter(periodic_task=task).delete()  # linked to another tenant or kind
    note = "tenant link"
    if link is not None:
        replaced = PeriodicTask.objects.get(pk=link.periodic_task_id)
        replaced.delete()  # cascades the old link
        note = f"replaces {replaced.name!r}"
    TenantTask.objects.create(tenant=tenant, kind=kind, periodic_task=task)
    return note


def sync_schedule_ensure(*, tenant: Tenant) -> TaskChange:
    """`tenant:<schema>:sync` every sync_interval, enabled while the tenant is active."""
    interval = interval_schedule_get(seconds=int(tenant.sync_interval.total_seconds()))
    return _task_upsert(
        tenant=tenant,
        job=SYNC,
        kind=TenantTask.Kind.SYNC,
        fields={
            "interval": interval,
            "crontab": None,
            "solar": None,
            "clocked": None,
            "one_off": False,
            "enabled": tenant.is_active,
        },
    )


def tenant_schedules_remove(*, tenant: Tenant) -> int:
    """Delete every periodic task linked to the tenant, or named after it."""
    with transaction.atomic():
        linked = PeriodicTask.objects.filter(tenant_link__tenant=tenant)
        named = PeriodicTask.objects.filter(name__startswith=f"tenant:{tenant.schema_name}:")
        deleted, _ = (linked | named).delete()
        PeriodicTasks.update_changed()
    return deleted


def schedules_reconcile(*, dry_run: bool = False) -> list[str]:
    """Bring every tenant's periodic tasks in line with the tenant; return what changed.

    Repairs rows edited in bulk or deleted by hand, tenants created before a
    schedule kind existed, and tasks left behind by tenants that are gone. With
    dry_run the same work is done and rolled back, so the report is exact.
    """
    changes: list[str] = []
    with transaction.atomic():
        for tenant in Tenant.objects.order_by("schema_name"):
            change = sync_schedule_ensure(tenant=tenant)
            if change.written:
                changes.append(change.describe())
        schemas = set(Tenant.objects.values_list("schema_name", flat=True))
        for task in PeriodicTask.objects.filter(name__startswith="tenant:").order_by("name"):
            if task.name.split(":")[1] not in schemas:
                task.delete()
                changes.append(f"deleted {task.name} (no such tenant)")
        if changes:
            PeriodicTasks.update_changed()
        if dry_run:
            transaction.set_rollback(True)
    return changes
