"""Run and delivery history across every tenant's schema: how much there is, its retention,
and the runs a dead worker left running.

These functions run from the public schema (platform jobs, commands) and visit
each tenant's schema in turn; nothing here is ever scoped by a tenant id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_context

from notifications.models import DigestDelivery, WebhookDelivery
from notifications.platform.models import DeliveryLog
from scheduling.models import SyncRun
from scheduling.platform.models import Occurrence, SyncFailure
from scheduling.services import RUN_ABANDONED, RUN_ABANDONED_AFTER, sync_runs_fail
from tenants.models import Tenant


@dataclass(frozen=True)
class RunSummary:
    ok: int
    failed: int
    last_status: str | None


def run_history_cleanup(*, older_than: timedelta, now: datetime | None = None) -> dict[str, int]:
    """Delete every tenant's SyncRuns that started, digest deliveries that were due,
    and webhook deliveries that were created before now - older_than, and the public
    copies of its failed runs and of its deliveries as well.

    Returns the number of rows deleted per tenant slug (zeros included), so the
    caller can log what each tenant lost; a public copy is a row of its own.
    """
    cutoff = (now or timezone.now()) - older_than
    deleted: dict[str, int] = {}
    for tenant_id, schema in Tenant.objects.order_by("schema_name").values_list(
        "pk", "schema_name"
    ):
        with schema_context(schema):
            # Test webhooks have no run; a run's own webhooks also go with it (cascade).
            webhooks, _ = WebhookDelivery.objects.filter(created_at__lt=cutoff).delete()
            runs, _ = SyncRun.objects.filter(started_at__lt=cutoff).delete()
            deliveries, _ = DigestDelivery.objects.filter(period__lt=cutoff).delete()
        failures, _ = SyncFailure.objects.filter(
            tenant_id=tenant_id, started_at__lt=cutoff
        ).delete()
        # One statement per tenant on deliverylog_tenant_created, as for the failures.
        logs, _ = DeliveryLog.objects.filter(tenant_id=tenant_id, created_at__lt=cutoff).delete()
        deleted[schema] = runs + deliveries + webhooks + failures + logs
    return deleted


OCCURRENCE_DELETE_CHUNK = 20000  # rows per statement: short transactions, little lock time


def occurrences_cleanup(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete the scheduler's occurrences recorded before now - older_than, oldest first,
    in chunks along the recorded_at index; returns how many were deleted. An occurrence
    still in flight is kept whatever its age (its worker marks it finished or failed);
    one sent or started whose time ran out (its message expired unstarted, its worker
    died) is not in flight any more."""
    cutoff = (now or timezone.now()) - older_than
    table = Occurrence._meta.db_table
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                DELETE FROM public.{table} WHERE id IN (
                    SELECT id FROM public.{table}
                    WHERE recorded_at < %s
                      AND (status NOT IN ('sent', 'started', 'buffered') OR live_until < %s)
                    ORDER BY recorded_at LIMIT %s
                )
                """,
                [cutoff, now or timezone.now(), OCCURRENCE_DELETE_CHUNK],
            )
            deleted = cursor.rowcount
        total += deleted
        if deleted < OCCURRENCE_DELETE_CHUNK:
            return total


def sync_runs_abandoned_fail(*, now: datetime | None = None) -> dict[str, int]:
    """Fail every tenant's runs still running RUN_ABANDONED_AFTER after their start, as
    any failed run; return how many per tenant slug that had any.

    A worker that dies mid-sync leaves its run running; the redelivered message, or
    the tenant's next sync, fails it (scheduling.services.sync_run). This sweep ends
    those of tenants that sync seldom, or are paused.
    """
    cutoff = (now or timezone.now()) - RUN_ABANDONED_AFTER
    failed: dict[str, int] = {}
    for tenant in Tenant.objects.order_by("schema_name"):
        with schema_context(tenant.schema_name):
            count = sync_runs_fail(
                tenant=tenant,
                runs=SyncRun.objects.filter(started_at__lt=cutoff),
                error=RUN_ABANDONED,
            )
        if count:
            failed[tenant.schema_name] = count
    return failed


def run_history_summary(*, schemas: Iterable[str]) -> dict[str, RunSummary]:
    """Ok and failed SyncRun counts and the latest run's status, per tenant schema.

    One query for all the schemas (their run tables joined by UNION ALL), so
    the status overview costs the same per page however many tenants there are.
    A schema without a run table (lost, or not yet provisioned) is left out.
    """
    table = SyncRun._meta.db_table
    present = _schemas_with_table(schemas=sorted(set(schemas)), table=table)
    if not present:
        return {}
    counted = " UNION ALL ".join(
        f"SELECT %s, status, COUNT(*), MAX(started_at) "
        f"FROM {quote_schema_name(schema)}.{quote_schema_name(table)} GROUP BY status"
        for schema in present
    )
    with connection.cursor() as cursor:
        cursor.execute(counted, present)
        rows = cursor.fetchall()
    summaries = {}
    for schema in present:
        mine = [row for row in rows if row[0] == schema]
        counts = {status: count for _, status, count, _ in mine}
        last = max(mine, key=lambda row: row[3], default=None)  # the status with the latest start
        summaries[schema] = RunSummary(
            ok=counts.get(SyncRun.Status.OK, 0),
            failed=counts.get(SyncRun.Status.FAILED, 0),
            last_status=last[1] if last else None,
        )
    return summaries


def _schemas_with_table(*, schemas: list[str], table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM unnest(%s::text[]) AS name "
            "WHERE to_regclass(format('%%I.%%I', name, %s)) IS NOT NULL ORDER BY name",
            [schemas, table],
        )
        return [name for (name,) in cursor.fetchall()]
