"""The platform's own periodic jobs: thin tasks in the public schema, each calling a service."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from scheduling import metrics
from scheduling.jobs import CLEANUP, HEARTBEAT, RECONCILE, PlatformJob
from scheduling.platform.maintenance import (
    occurrences_cleanup,
    run_history_cleanup,
    sync_runs_abandoned_fail,
)
from scheduling.platform.services import schedules_reconcile

logger = logging.getLogger(__name__)


@shared_task(base=PlatformJob, name=HEARTBEAT.task_name, ignore_result=True)
def beat_heartbeat() -> str:
    return metrics.beat_heartbeat_record().isoformat()


@shared_task(base=PlatformJob, name=CLEANUP.task_name, ignore_result=True)
def cleanup_runs() -> dict[str, int]:
    sync_runs_abandoned_fail()  # logs each run it fails
    deleted = run_history_cleanup(older_than=timedelta(days=settings.RUN_HISTORY_DAYS))
    logger.info(
        "Deleted %d run(s) older than %d days: %s",
        sum(deleted.values()),
        settings.RUN_HISTORY_DAYS,
        {schema: count for schema, count in deleted.items() if count},
    )
    occurrences = occurrences_cleanup(older_than=timedelta(days=settings.OCCURRENCE_HISTORY_DAYS))
    logger.info(
        "Deleted %d occurrence(s) older than %d days", occurrences, settings.OCCURRENCE_HISTORY_DAYS
    )
    return deleted


@shared_task(base=PlatformJob, name=RECONCILE.task_name, ignore_result=True)
def reconcile() -> list[str]:
    changes = schedules_reconcile()
    for change in changes:
        logger.warning("Reconcile repaired drift: %s", change)  # drift means something went wrong
    return changes
