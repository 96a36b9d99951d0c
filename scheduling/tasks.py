"""Thin Celery tasks: check the tenant, load, call a service."""

from __future__ import annotations

from celery import shared_task
from django.db import connection

from scheduling.beat import nominal_time_from_request
from scheduling.jobs import SYNC, TenantJob
from scheduling.services import sync_run
from tenants.models import Tenant


@shared_task(base=TenantJob, name=SYNC.task_name, bind=True, ignore_result=True)
def sync_tenant(self) -> None:
    # Fresh, by schema: the worker caches tenant rows, which may be stale or recreated.
    tenant = Tenant.objects.get(schema_name=connection.schema_name)
    sync_run(
        tenant=tenant,
        task_id=self.request.id or "",
        nominal_start=nominal_time_from_request(self.request),
    )
