"""Benchmark tenant onboarding: clone from the template against running migrations.

    python manage.py bench_onboarding --tenants 20

Both methods run interleaved in one process on the same database, so they see
the same cache and load. Two figures per method:
  schema         the schema step alone (in a transaction that is rolled back);
  tenant_create  the whole service: tenant row, schema, domain, admin user.
Every tenant it creates is deleted again.
"""

from __future__ import annotations

import statistics
import time
import uuid

from django.core.management.base import BaseCommand
from django.db import transaction

from tenants.models import Tenant
from tenants.provisioning import tenant_schema_provision
from tenants.services import tenant_create, tenant_delete

METHODS = ("clone", "migrate")


class _Rollback(Exception):
    pass


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Command(BaseCommand):
    help = "Print p50/p95 of tenant creation by clone and by migrations, side by side."

    def add_arguments(self, parser):
        parser.add_argument("--tenants", type=int, default=20, help="tenants per method")

    def handle(self, *args, **options):
        count = options["tenants"]
        if count < 1:
            self.stderr.write("--tenants must be at least 1")
            raise SystemExit(2)
        run = uuid.uuid4().hex[:6]
        timings: dict[tuple[str, str], list[float]] = {}
        try:
            for i in range(count):
                for method in METHODS:
                    slug = f"bench-{run}-{method[0]}{i}"
                    timings.setdefault(("schema", method), []).append(
                        self._schema_only(slug, method)
                    )
                    started = time.perf_counter()
                    tenant_create(
                        name=slug,
                        slug=slug,
                        admin_email=f"admin@{slug}.test",
                        admin_password="bench-password-1",
                        method=method,
                    )
                    timings.setdefault(("tenant_create", method), []).append(
                        time.perf_counter() - started
                    )
        finally:
            for tenant in Tenant.objects.filter(schema_name__startswith=f"bench-{run}-"):
                tenant_delete(tenant=tenant)
        self._report(count, timings)

    @staticmethod
    def _schema_only(slug: str, method: str) -> float:
        started = time.perf_counter()
        try:
            with transaction.atomic():
                tenant_schema_provision(schema_name=f"{slug}-s", method=method)
                elapsed = time.perf_counter() - started
                raise _Rollback
        except _Rollback:
            return elapsed

    def _report(self, count: int, timings: dict[tuple[str, str], list[float]]) -> None:
        self.stdout.write(f"tenant onboarding, {count} tenants per method (seconds)")
        self.stdout.write(f"{'step':<15}{'method':<9}{'p50':>8}{'p95':>8}{'mean':>8}{'max':>8}")
        for step in ("schema", "tenant_create"):
            for method in METHODS:
                values = timings[(step, method)]
                self.stdout.write(
                    f"{step:<15}{method:<9}{_percentile(values, 0.5):>8.3f}"
                    f"{_percentile(values, 0.95):>8.3f}{statistics.fmean(values):>8.3f}"
                    f"{max(values):>8.3f}"
                )
            ratio = statistics.median(timings[(step, "migrate")]) / statistics.median(
                timings[(step, "clone")]
            )
            self.stdout.write(f"{'':<15}migrate/clone p50 ratio: {ratio:.1f}x")
