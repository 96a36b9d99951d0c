"""Sync runs, and users' schedules: the work done inside one tenant's schema.

Sync fetches a tenant's records and upserts them into its schema, recording a SyncRun.

These functions run with the connection on the tenant's schema (the sync task
is a TenantJob); they never name another tenant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from notifications.webhooks import webhook_delivery_queue
from scheduling.fetch import FetchError
from scheduling.models import Record, SyncRun, UserSchedule
from scheduling.platform.models import SyncFailure
from scheduling.sources import FeedError, SourceRecord, demo_records, http_json_fetch
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.selectors import tenant_current

logger = logging.getLogger(__name__)


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
    """Run one sync and return its SyncRun, ok or failed. A failed run changes no record."""
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
    except Exception as exc:
        logger.exception("Sync of %s failed unexpectedly", tenant.schema_name)
        return _run_finish(
            run,
            tenant=tenant,
            status=SyncRun.Status.FAILED,
            error=f"Internal error ({type(exc).__name__}).",
        )
    return _run_finish(run, tenant=tenant, status=SyncRun.Status.OK, counts=counts)


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
