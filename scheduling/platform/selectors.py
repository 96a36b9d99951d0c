"""Operators' reads of sync failures across tenants, from the public schema.

Every query is bounded by an index on SyncFailure (failures since T; one
tenant's failures, newest first), and a page costs the same number of queries
whatever the number of tenants or failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, OuterRef, QuerySet, Subquery

from scheduling.platform.models import SyncFailure
from tenants.models import Tenant


@dataclass(frozen=True)
class FailureTotals:
    tenants: int
    failures: int


@dataclass(frozen=True)
class TenantFailures:
    tenant: Tenant
    failures: int
    last_failure_at: datetime
    last_error: str


def sync_failure_totals(*, since: datetime) -> FailureTotals:
    totals = SyncFailure.objects.filter(started_at__gte=since).aggregate(
        failures=Count("*"), tenants=Count("tenant", distinct=True)
    )
    return FailureTotals(tenants=totals["tenants"], failures=totals["failures"])


def sync_failure_counts(*, since: datetime) -> QuerySet:
    """Per failing tenant: {"tenant_id", "failures", "last_failure_at"}, most failures first.

    Slice it for a page, then pass the page to sync_failure_rows.
    """
    return (
        SyncFailure.objects.filter(started_at__gte=since)
        .values("tenant_id")
        .annotate(failures=Count("*"), last_failure_at=Max("started_at"))
        .order_by("-failures", "-last_failure_at", "tenant_id")
    )


def sync_failure_rows(*, counts: list[dict], since: datetime) -> list[TenantFailures]:
    """A page of sync_failure_counts with each tenant and its latest error, in one query."""
    latest = SyncFailure.objects.filter(tenant=OuterRef("pk"), started_at__gte=since).order_by(
        "-started_at", "-id"
    )
    tenants = Tenant.objects.only("public_id", "name", "schema_name", "status").annotate(
        last_error=Subquery(latest.values("error")[:1])
    )
    by_id = tenants.in_bulk([row["tenant_id"] for row in counts])
    return [
        TenantFailures(
            tenant=by_id[row["tenant_id"]],
            failures=row["failures"],
            last_failure_at=row["last_failure_at"],
            last_error=by_id[row["tenant_id"]].last_error,
        )
        for row in counts
        if row["tenant_id"] in by_id  # a tenant deleted between the two reads
    ]


def tenant_sync_failures(*, tenant: Tenant, since: datetime) -> QuerySet[SyncFailure]:
    return SyncFailure.objects.filter(tenant=tenant, started_at__gte=since).order_by(
        "-started_at", "-id"
    )
