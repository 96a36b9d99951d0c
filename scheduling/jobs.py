"""The registry of job kinds. Only these can be scheduled; no task name comes from input.

Every Celery task of the project is declared with one of the two bases below:
  TenantJob    runs inside a tenant's schema, taken from the `_schema_name` header;
  PlatformJob  runs in the public schema, and says so explicitly.
A TenantJob that arrives without the header, with the public schema, or with a
schema that is no tenant's, is refused: logged with its task id, counted, and
never run. One for a paused tenant is skipped and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery.exceptions import Retry
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django_tenants.utils import get_public_schema_name
from tenant_schemas_celery.app import get_schema_name_from_task
from tenant_schemas_celery.task import TenantTask

from scheduling import metrics
from scheduling.dispatch import guard
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A kind of work, and the bounds of one run of it (in seconds).

    soft_time_limit  the task gets SoftTimeLimitExceeded and ends its run cleanly: a
                     sync records a failed run, a delivery stays queued for its requeue;
    time_limit       the worker kills the process running it (the hard limit), soon
                     after the soft one; at most CELERY_TASK_TIME_LIMIT (300 s), which
                     the deploy files' graceful stop and the broker's visibility timeout
                     both exceed;
    expires          how long a message sent by hand (run now, a queued delivery) stays
                     worth starting. What beat sends expires when its schedule sends the
                     next one (scheduling.beat), unless its PeriodicTask sets an expiry.

    Expiry per kind: a sync or a digest dispatch does all an older one would, so a
    message that waited past the next one is dropped, not run twice in a row; a run
    pressed by hand waits at most a quarter of an hour, the default sync interval.
    A delivery's retries keep its first message's expiry (Celery copies the absolute
    time), so a send expires after a day: all NOTIFY_MAX_RETRIES countdowns fit in
    it, and deliveries_requeue_stale fails a delivery still queued after a day anyway.
    """

    kind: str
    task_name: str
    scope: str  # "tenant" or "platform"
    description: str
    soft_time_limit: int
    time_limit: int
    expires: int

    def __post_init__(self) -> None:
        if not 0 < self.soft_time_limit < self.time_limit <= settings.CELERY_TASK_TIME_LIMIT:
            raise ImproperlyConfigured(
                f"Job {self.kind}: need 0 < soft_time_limit < time_limit <= "
                f"CELERY_TASK_TIME_LIMIT ({settings.CELERY_TASK_TIME_LIMIT} s)."
            )


DAY = 24 * 3600

# One fetch waits at most SYNC_FETCH_CONNECT_TIMEOUT + SYNC_FETCH_READ_TIMEOUT (25 s) per
# read of a body of up to SYNC_FETCH_MAX_BYTES; the upsert of that many records is seconds.
SYNC = Job(
    "sync",
    "scheduling.sync_tenant",
    "tenant",
    "Sync the tenant's records from its source",
    soft_time_limit=120,
    time_limit=180,
    expires=15 * 60,
)
# Up to MAX_BATCHES_PER_RUN (20) batches of DIGEST_DISPATCH_BATCH (500) users, a few
# milliseconds each; what is left waits for the next run.
DIGEST_DISPATCH = Job(
    "digests",
    "notifications.dispatch_digests",
    "tenant",
    "Queue the digests that are due",
    soft_time_limit=120,
    time_limit=180,
    expires=settings.DIGEST_DISPATCH_INTERVAL,
)
# One SMTP conversation: half a dozen exchanges, each bounded by EMAIL_TIMEOUT (10 s).
DIGEST_SEND = Job(
    "digest_send",
    "notifications.send_digest",
    "tenant",
    "Send one user's digest",
    soft_time_limit=60,
    time_limit=90,
    expires=DAY,
)
# One POST: WEBHOOK_CONNECT_TIMEOUT + WEBHOOK_READ_TIMEOUT (15 s).
WEBHOOK_SEND = Job(
    "webhook_send",
    "notifications.send_webhook",
    "tenant",
    "POST one delivery to the webhook",
    soft_time_limit=30,
    time_limit=60,
    expires=DAY,
)
HEARTBEAT = Job(
    "heartbeat",
    "scheduling.beat_heartbeat",
    "platform",
    "Record that beat is alive",
    soft_time_limit=10,
    time_limit=20,
    expires=60,
)
# Both visit every tenant's schema. Cut short, each does the rest on its next run.
CLEANUP = Job(
    "cleanup",
    "scheduling.cleanup_runs",
    "platform",
    "Delete old run history",
    soft_time_limit=240,
    time_limit=300,
    expires=3600,
)
RECONCILE = Job(
    "reconcile",
    "scheduling.reconcile",
    "platform",
    "Repair schedule drift",
    soft_time_limit=240,
    time_limit=300,
    expires=3600,
)

JOBS: dict[str, Job] = {
    job.task_name: job
    for job in (SYNC, DIGEST_DISPATCH, DIGEST_SEND, WEBHOOK_SEND, HEARTBEAT, CLEANUP, RECONCILE)
}


def job_for_task(task_name: str) -> Job | None:
    return JOBS.get(task_name)


class RegisteredJob(TenantTask):
    """The base of TenantJob and PlatformJob: every task declared with either is a
    registered job kind and runs within that kind's time limits and expiry, set here
    once for all of them (over anything a decorator says)."""

    abstract = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:  # TenantJob and PlatformJob themselves
            return
        job = job_for_task(name)
        if job is None:
            raise ImproperlyConfigured(f"Task {name} is not a job kind of scheduling.jobs.JOBS.")
        cls.soft_time_limit, cls.time_limit = job.soft_time_limit, job.time_limit
        cls.expires = job.expires

    def __call__(self, *args, **kwargs):
        # The duplicate guard of the project's scheduler: a copy of an occurrence that ran
        # already, or is running, runs nothing (scheduling.dispatch.guard).
        claim = guard.occurrence_claim(self)
        if not claim.runs:
            metrics.task_outcome_mark(self, metrics.SKIPPED if claim.duplicate else metrics.REFUSED)
            return None
        try:
            result = super().__call__(*args, **kwargs)
        except Retry:
            guard.occurrence_release(claim)
            raise
        except BaseException as error:
            guard.occurrence_finish(claim, error=error)
            raise
        guard.occurrence_finish(claim)
        return result


class TenantJob(RegisteredJob):
    abstract = True

    def __call__(self, *args, **kwargs):
        schema = get_schema_name_from_task(self, kwargs)
        if not schema or schema == get_public_schema_name() or connection.schema_name != schema:
            # tenant-schemas-celery swallows a failed tenant lookup, leaving the connection on
            # public; running the body there would touch the wrong data, so refuse instead.
            metrics.refused_task_record()
            metrics.task_outcome_mark(self, metrics.REFUSED)
            logger.error(
                "Refused tenant task %s[%s]: header _schema_name=%r, connection schema=%r",
                self.name,
                self.request.id,
                schema,
                connection.schema_name,
            )
            return None
        if not Tenant.objects.filter(schema_name=schema, status=Tenant.Status.ACTIVE).exists():
            # Paused: its periodic tasks are disabled, but a message may already be queued,
            # or an operator's schedule may name it. Work resumes with the tenant.
            logger.info(
                "Skipped tenant task %s[%s]: %s is paused", self.name, self.request.id, schema
            )
            metrics.task_outcome_mark(self, metrics.SKIPPED)
            guard.occurrence_skip(self, f"{schema} is paused")
            return None
        return super().__call__(*args, **kwargs)


class PlatformJob(RegisteredJob):
    abstract = True

    def __call__(self, *args, **kwargs):
        connection.set_schema_to_public()
        return super().__call__(*args, **kwargs)
