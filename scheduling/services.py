"""Sync runs, and users' schedules: the work done inside one tenant's schema.

Sync fetches a tenant's records and upserts them into its schema, recording a SyncRun.

These functions run with the connection on the tenant's schema (the sync task
is a TenantJob); they never name another tenant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from notifications.webhooks import webhook_delivery_queue
from scheduling import metrics
from scheduling.fetch import FetchError
from scheduling.jobs import SYNC
from scheduling.models import Record, SyncRun, UserSchedule
from scheduling.platform.models import SyncFailure
from scheduling.sources import FeedError, SourceRecord, demo_records, http_json_fetch
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.selectors import tenant_current

logger = logging.getLogger(__name__)

RUN_REDELIVERED = "Interrupted: the worker stopped (redelivered)."
RUN_ABANDONED = "Interrupted: no worker finished this run."
RUN_TIMED_OUT = "Timed out: the sync ran past its time limit and was stopped."
# The worker kills a sync at its hard time limit, so a run still "running" this long
# after it started lost its worker (killed, its message expired or lost); the margin
# allows for the clocks of different machines.
RUN_ABANDONED_AFTER = timedelta(seconds=SYNC.time_limit) + timedelta(minutes=5)


@dataclass(frozen=True)
class UpsertCounts:
    created: int
    updated: int
    unchanged: int


def source_records_fetch(*, tenant: Tenant, run_number: int) -> list[SourceRecord]:
    if tenant.source_kind == Tenant.SourceKind.HTTP_JSON:
        return http_json_fetch(url=tenant.source_url, token=tenant.source_token)
    return demo_records(run_number=run_number, now=timezone.now())


def records_upsert(*, records: list[SourceRecord], now: datetime) -> UpsertCounts:
    existing = Record.objects.in_bulk([r.external_id for r in records], field_name="external_id")
    fields = ("title", "url", "source_updated_at", "data")
    new, changed, unchanged = [], [], 0
    for item in records:
        values = {
            "title": item.title,
            "url": item.url,
            "source_updated_at": item.updated_at,
            "data": item.data,
        }
        current = existing.get(item.external_id)
        if current is None:
            new.append(
                Record(external_id=item.external_id, first_seen_at=now, changed_at=now, **values)
            )
        elif any(getattr(current, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(current, name, value)
            current.changed_at = now
            changed.append(current)
        else:
            unchanged += 1
    Record.objects.bulk_create(new, batch_size=500)
    Record.objects.bulk_update(changed, [*fields, "changed_at"], batch_size=500)
    return UpsertCounts(created=len(new), updated=len(changed), unchanged=unchanged)


def sync_run(
    *, tenant: Tenant, task_id: str = "", nominal_start: datetime | None = None
) -> SyncRun:
    """Run one sync and return its SyncRun, ok or failed. A failed run changes no record.

    A task id that already has a running run is a message delivered again because its
    worker died mid-run (tasks are acknowledged late): that run is failed first. So is
    any run still running RUN_ABANDONED_AFTER after its start, whose message expired
    before it could come back. A run past the task's soft time limit fails as timed out.
    """
    if task_id:
        sync_runs_fail(
            tenant=tenant, runs=SyncRun.objects.filter(task_id=task_id), error=RUN_REDELIVERED
        )
    abandoned = SyncRun.objects.filter(started_at__lt=timezone.now() - RUN_ABANDONED_AFTER)
    sync_runs_fail(tenant=tenant, runs=abandoned, error=RUN_ABANDONED)
    run_number = SyncRun.objects.count()
    run = SyncRun.objects.create(
        task_id=task_id, nominal_start=nominal_start, started_at=timezone.now()
    )
    try:
        records = source_records_fetch(tenant=tenant, run_number=run_number)
        with transaction.atomic():
            counts = records_upsert(records=records, now=timezone.now())
    except (FetchError, FeedError) as exc:
        return _run_finish(run, tenant=tenant, status=SyncRun.Status.FAILED, error=str(exc))
    except SoftTimeLimitExceeded:
        return _run_finish(run, tenant=tenant, status=SyncRun.Status.FAILED, error=RUN_TIMED_OUT)
    except Exception as exc:
        logger.exception("Sync of %s failed unexpectedly", tenant.schema_name)
        return _run_finish(
            run,
            tenant=tenant,
            status=SyncRun.Status.FAILED,
            error=f"Internal error ({type(exc).__name__}).",
        )
    return _run_finish(run, tenant=tenant, status=SyncRun.Status.OK, counts=counts)


def sync_runs_fail(*, tenant: Tenant, runs: QuerySet[SyncRun], error: str) -> int:
    """Fail those of `runs` still running, as any failed run (SyncFailure copy, webhook,
    metrics), and return how many: their worker stopped and will never finish them.

    Each row is locked first and one locked elsewhere is skipped, so a redelivered
    task and the sweep of the cleanup job never fail the same run twice.
    """
    failed = 0
    with transaction.atomic():
        for run in runs.filter(status=SyncRun.Status.RUNNING).select_for_update(skip_locked=True):
            logger.warning("Sync run %s of %s: %s", run.public_id, tenant.schema_name, error)
            _run_finish(run, tenant=tenant, status=SyncRun.Status.FAILED, error=error)
            failed += 1
    return failed


@transaction.atomic  # a failed run and its public SyncFailure row stand or fall together
def _run_finish(
    run: SyncRun,
    *,
    tenant: Tenant,
    status: str,
    error: str = "",
    counts: UpsertCounts | None = None,
) -> SyncRun:
    run.status, run.error, run.finished_at = status, error, timezone.now()
    if counts is not None:
        run.created_count, run.updated_count, run.unchanged_count = (
            counts.created,
            counts.updated,
            counts.unchanged,
        )
    run.save()
    webhook_delivery_queue(run=run, tenant=tenant)  # never raises: it cannot fail the run
    # Counted once the outcome is committed: a rolled-back run never happened.
    transaction.on_commit(
        partial(
            metrics.sync_run_record,
            tenant=tenant.schema_name,
            status=status,
            finished_at=run.finished_at,
        )
    )
    if status == SyncRun.Status.FAILED:
        # The operators' cross-tenant overview reads this copy in the public schema.
        SyncFailure.objects.create(
            tenant=tenant,
            run_public_id=run.public_id,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=error,
        )
    return run


@transaction.atomic  # the schedule, its dispatcher and its audit event stand or fall together
def user_schedule_update(
    *,
    user: User,
    frequency: str,
    hour: int | None = None,
    weekday: int | None = None,
    timezone_name: str | None = None,
    enabled: bool = True,
    send_when_empty: bool | None = None,
    kind: str = UserSchedule.Kind.DIGEST,
    now: datetime | None = None,
) -> UserSchedule:
    """Create or change the user's schedule of `kind`; raises ValidationError for bad input.

    The due time is recomputed from `now` only when the rule changes, so saving
    the same settings again neither skips nor repeats a digest. The zone
    defaults to the one the schedule already has, else the tenant's, and
    `send_when_empty` to the stored choice.
    """
    schedule = UserSchedule.objects.select_for_update().filter(
        user=user, kind=kind
    ).first() or UserSchedule(user=user, kind=kind, timezone=tenant_current().timezone)
    rule_before = _schedule_rule(schedule) if schedule.pk else None
    schedule.frequency, schedule.hour, schedule.weekday = frequency, hour, weekday
    schedule.enabled = enabled
    if send_when_empty is not None:
        schedule.send_when_empty = send_when_empty
    if timezone_name:
        schedule.timezone = timezone_name
    if not schedule.is_live:
        schedule.next_due_at = None
    schedule.full_clean()
    if schedule.is_live and (
        _schedule_rule(schedule) != rule_before or schedule.next_due_at is None
    ):
        schedule.next_due_at = schedule.next_due_after(now or timezone.now())
    schedule.save()
    return schedule


def _schedule_rule(schedule: UserSchedule) -> tuple:
    return (
        schedule.frequency,
        schedule.hour,
        schedule.weekday,
        schedule.timezone,
        schedule.enabled,
    )
