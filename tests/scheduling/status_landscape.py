"""One set of periodic tasks and runs, read by both schedules_status and /api/status/schedules,
so the tests of the two compare the same rows."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from scheduling.jobs import SYNC
from scheduling.models import SyncRun
from scheduling.platform.schedules import Crontab, schedule_create
from tenants.models import Tenant


def status_landscape_create(*, globex: Tenant, now: datetime) -> None:
    """Platform schedules, an operator's nightly sync of globex (its tenant only in its
    header), a legacy task nobody registered, and runs: acme ok, ok, failed; globex ok.
    The tenants acme and globex, with their own sync tasks, must exist already."""
    call_command("setup_schedules", stdout=io.StringIO())
    schedule_create(
        name="globex nightly",
        task_name=SYNC.task_name,
        tenant=globex,
        when=Crontab(minute="0", hour="2", timezone="America/New_York"),
    )
    PeriodicTask.objects.create(
        name="legacy",
        task="legacy.thing",
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS),
    )
    with schema_context("acme"):
        for days, status in [(3, "ok"), (2, "ok"), (1, "failed")]:
            started = now - timedelta(days=days)
            SyncRun.objects.create(started_at=started, finished_at=started, status=status)
    with schema_context("globex"):
        SyncRun.objects.create(started_at=now, finished_at=now, status="ok")
