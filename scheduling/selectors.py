"""Reads for the sync pages of a tenant's site, on the schema the connection is on.

Every read here is a fixed number of indexed queries, however many runs,
users or tenants there are: the dashboard and run history must stay fast on a
platform with thousands of tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django_celery_beat.models import PeriodicTask

from scheduling.models import SyncRun, UserSchedule
from scheduling.platform.models import TenantTask
from scheduling.platform.schedules import schedule_describe, schedule_next_run
from scheduling.platform.services import SCHEDULE_FIELDS, tenant_task_name
from tenants.models import Tenant

# How far back the dashboard counts failed runs.
FAILURE_WINDOW = timedelta(hours=24)
# Newest first; the id breaks ties between runs started in the same microsecond.
RUN_ORDER = ("-started_at", "-id")


@dataclass(frozen=True)
class TenantSchedule:
    """One of the tenant's periodic tasks, in words."""

    kind: str  # a TenantTask.Kind value
    label: str
    schedule: str  # "every 15 minutes"
    enabled: bool
    next_run_at: datetime | None


@dataclass(frozen=True)
class SyncOverview:
    paused: bool
    last_run: SyncRun | None
    failed_recently: int  # failed runs that started within FAILURE_WINDOW
    sync: TenantSchedule | None  # None when the task is missing (reconcile restores it)
    schedules: list[TenantSchedule]
    digest_users: int  # active users with a live digest schedule

    @property
    def next_run_at(self) -> datetime | None:
        if self.paused or self.sync is None:
            return None
        return self.sync.next_run_at


def _tenant_tasks(*, tenant: Tenant) -> QuerySet[PeriodicTask]:
    # By name: the unique index on PeriodicTask.name, whatever the number of tenants.
    names = [tenant_task_name(tenant=tenant, kind=kind) for kind in TenantTask.Kind.values]
    return PeriodicTask.objects.filter(name__in=names).select_related(
        *SCHEDULE_FIELDS, "dispatch_state"
    )


def _schedule_of(task: PeriodicTask, *, now: datetime) -> TenantSchedule:
    kind = task.name.rsplit(":", 1)[-1]
    return TenantSchedule(
        kind=kind,
        label=TenantTask.Kind(kind).label,
        schedule=schedule_describe(task=task),
        enabled=task.enabled,
        next_run_at=schedule_next_run(task=task, now=now),
    )


def tenant_schedule_list(*, tenant: Tenant, now: datetime) -> list[TenantSchedule]:
    """The tenant's sync and digest dispatcher tasks that exist, sync first; one query."""
    schedules = [_schedule_of(task, now=now) for task in _tenant_tasks(tenant=tenant)]
    order = TenantTask.Kind.values
    return sorted(schedules, key=lambda item: order.index(item.kind))


def sync_next_run(*, tenant: Tenant, now: datetime) -> datetime | None:
    """When beat will next send the tenant's sync; None while paused or without a task."""
    if not tenant.is_active:
        return None
    task = (
        PeriodicTask.objects.filter(name=tenant_task_name(tenant=tenant, kind=TenantTask.Kind.SYNC))
        .select_related(*SCHEDULE_FIELDS, "dispatch_state")
        .first()
    )
    return schedule_next_run(task=task, now=now) if task is not None else None


def sync_overview(*, tenant: Tenant, now: datetime) -> SyncOverview:
    """What the dashboard shows, in four queries."""
    schedules = tenant_schedule_list(tenant=tenant, now=now)
    recent_failures = SyncRun.objects.filter(
        status=SyncRun.Status.FAILED, started_at__gte=now - FAILURE_WINDOW
    )
    digest_users = UserSchedule.objects.filter(
        kind=UserSchedule.Kind.DIGEST, next_due_at__isnull=False, user__is_active=True
    )
    return SyncOverview(
        paused=not tenant.is_active,
        last_run=SyncRun.objects.order_by(*RUN_ORDER).first(),
        failed_recently=recent_failures.count(),
        sync=next((item for item in schedules if item.kind == TenantTask.Kind.SYNC), None),
        schedules=schedules,
        digest_users=digest_users.count(),
    )


def sync_run_list(*, status: str | None = None) -> QuerySet[SyncRun]:
    """The tenant's runs, newest first, of one status or all; read along the started_at indexes."""
    runs = SyncRun.objects.order_by(*RUN_ORDER)
    return runs.filter(status=status) if status else runs
