"""Celery signal receivers that count what became of every job and how late it started.

Connected from SchedulingConfig.ready(), so every process that loads Django has
them; they fire where tasks run, in the workers. Each one only reads the task's
request and calls scheduling.metrics, whose writes never raise or wait long.

  task_prerun   dispatch lag: the start minus the `nominal_time` beat stamped on the
                message; first deliveries only, as a retry starts late on purpose
  task_postrun  "ok", or the "refused"/"skipped" TenantJob marked with task_outcome_mark
  task_retry    "retried"
  task_failure  "failed"; also sent by the worker's parent process for a hard time
                limit, where no request is at hand and the tenant label stays empty

A sync that ran is counted with its SyncRun's outcome by the sync service
(scheduling.services._run_finish), so here only its refusals and skips are: a sync
stopped by its hard time limit or a lost worker counts once its run is failed by
the redelivery or the cleanup job's sweep, not also as a failed task.
"""

from __future__ import annotations

from celery import Task
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from celery.states import SUCCESS
from django.utils import timezone
from tenant_schemas_celery.app import get_schema_name_from_task

from scheduling import metrics
from scheduling.beat import nominal_time_from_request
from scheduling.jobs import SYNC, Job, job_for_task


@task_prerun.connect(dispatch_uid="scheduling.metrics.dispatch_lag")
def _dispatch_lag(task: Task, **kwargs) -> None:
    job = job_for_task(task.name)
    nominal = nominal_time_from_request(task.request)
    if job is None or nominal is None or task.request.retries:
        return
    seconds = (timezone.now() - nominal).total_seconds()
    metrics.dispatch_lag_observe(kind=job.kind, seconds=seconds)


@task_postrun.connect(dispatch_uid="scheduling.metrics.returned")
def _returned(task: Task, state: str, **kwargs) -> None:
    job = job_for_task(task.name)
    if job is None or state != SUCCESS:  # retries and failures have their own signals
        return
    _record(task, job, metrics.task_outcome_marked(task) or metrics.OK)


@task_retry.connect(dispatch_uid="scheduling.metrics.retried")
def _retried(sender: Task, **kwargs) -> None:
    if job := job_for_task(sender.name):
        _record(sender, job, metrics.RETRIED)


@task_failure.connect(dispatch_uid="scheduling.metrics.failed")
def _failed(sender: Task, task_id: str, **kwargs) -> None:
    if job := job_for_task(sender.name):
        _record(sender, job, metrics.FAILED, request_known=sender.request.id == task_id)


def _record(task: Task, job: Job, status: str, *, request_known: bool = True) -> None:
    if job is SYNC and status not in {metrics.REFUSED, metrics.SKIPPED}:
        return  # it ran: its SyncRun's outcome counts
    tenant = ""
    # Only a tenant job that was let in has a real tenant: a refused one's header may
    # name anything, and that must not become a label.
    if job.scope == "tenant" and status != metrics.REFUSED and request_known:
        tenant = get_schema_name_from_task(task, {}) or ""
    metrics.job_run_record(tenant=tenant, kind=job.kind, status=status)
