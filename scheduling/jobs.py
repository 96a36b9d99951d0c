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

from django.db import connection
from django_tenants.utils import get_public_schema_name
from tenant_schemas_celery.app import get_schema_name_from_task
from tenant_schemas_celery.task import TenantTask

from scheduling import metrics
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    kind: str
    task_name: str
    scope: str  # "tenant" or "platform"
    description: str


SYNC = Job("sync", "scheduling.sync_tenant", "tenant", "Sync the tenant's records from its source")
DIGEST_DISPATCH = Job(
    "digests", "notifications.dispatch_digests", "tenant", "Queue the digests that are due"
)
DIGEST_SEND = Job("digest_send", "notifications.send_digest", "tenant", "Send one user's digest")
WEBHOOK_SEND = Job(
    "webhook_send", "notifications.send_webhook", "tenant", "POST one delivery to the webhook"
)
HEARTBEAT = Job("heartbeat", "scheduling.beat_heartbeat", "platform", "Record that beat is alive")
CLEANUP = Job("cleanup", "scheduling.cleanup_runs", "platform", "Delete old run history")
RECONCILE = Job("reconcile", "scheduling.reconcile", "platform", "Repair schedule drift")

JOBS: dict[str, Job] = {
    job.task_name: job
    for job in (SYNC, DIGEST_DISPATCH, DIGEST_SEND, WEBHOOK_SEND, HEARTBEAT, CLEANUP, RECONCILE)
}


def job_for_task(task_name: str) -> Job | None:
    return JOBS.get(task_name)


class TenantJob(TenantTask):
    abstract = True

    def __call__(self, *args, **kwargs):
        schema = get_schema_name_from_task(self, kwargs)
        if not schema or schema == get_public_schema_name() or connection.schema_name != schema:
            # tenant-schemas-celery swallows a failed tenant lookup, leaving the connection on
            # public; running the body there would touch the wrong data, so refuse instead.
            metrics.refused_task_record()
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
            return None
        return super().__call__(*args, **kwargs)


class PlatformJob(TenantTask):
    abstract = True

    def __call__(self, *args, **kwargs):
        connection.set_schema_to_public()
        return super().__call__(*args, **kwargs)
