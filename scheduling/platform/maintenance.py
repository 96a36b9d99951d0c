"""Run and delivery history across every tenant's schema: how much there is, and its retention.

These functions run from the public schema (platform jobs, commands) and visit
each tenant's schema in turn; nothing here is ever scoped by a tenant id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max
from django.utils import timezone
from django_tenants.utils import schema_context

from notifications.models import DigestDelivery, WebhookDelivery
from notifications.platform.models import DeliveryLog
from scheduling.models import SyncRun
from scheduling.platform.models import SyncFailure
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


def run_history_summary(*, schemas: Iterable[str]) -> dict[str, RunSummary]:
    """Ok and failed SyncRun counts and the latest run's status, per tenant schema.

    One query per schema: runs are counted and dated per status, and the status
    with the latest start is the last run's.
    """
    summaries: dict[str, RunSummary] = {}
    for schema in sorted(set(schemas)):
        with schema_context(schema):
            rows = list(
                SyncRun.objects.order_by()
                .values("status")
                .annotate(count=Count("pk"), latest=Max("started_at"))
            )
        counts = {row["status"]: row["count"] for row in rows}
        last = max(rows, key=lambda row: row["latest"], default=None)
        summaries[schema] = RunSummary(
            ok=counts.get(SyncRun.Status.OK, 0),
            failed=counts.get(SyncRun.Status.FAILED, 0),
            last_status=last["status"] if last else None,
        )
    return summaries
