"""Operator-managed schedules of registered jobs: django-celery-beat's programmatic API, checked.

    schedule_create(name="nightly-acme-sync", task_name="scheduling.sync_tenant",
                    when=Crontab(minute="0", hour="2", timezone="Europe/Berlin"), tenant=acme)
    schedule_update(name="nightly-acme-sync", when=Interval(seconds=3600))
    schedule_disable(name=...), schedule_enable(name=...), schedule_delete(name=...)
    schedule_status(name=...) -> dict

Rules:
  - Only jobs in scheduling.jobs.JOBS can be scheduled: a task name never comes
    from input unchecked. Tenant jobs need a tenant and carry its
    `_schema_name` header; platform jobs take no tenant.
  - Names starting with `tenant:` are the per-tenant tasks that
    scheduling.platform.services keeps in step with the tenants; they are
    refused here (pause or resume the tenant instead), except by schedule_status.
  - Everything is validated before anything is written, and every problem is
    reported at once: one django ValidationError keyed by argument name.
  - A call that would change nothing writes nothing: each PeriodicTask write
    makes the stock beat reload every schedule.
  - An unknown name raises ScheduleNotFound, a PeriodicTask.DoesNotExist.
  - Every change is recorded in the audit trail, with the actor of the
    surrounding scheduling.audit.services.acting_as() block (system by default).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import ParseException
from celery.schedules import crontab as celery_crontab
from celery.schedules import solar as celery_solar
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_tenants.utils import get_public_schema_name

from scheduling.audit.services import (
    periodic_task_snapshots,
    periodic_tasks_audit_deleted,
    periodic_tasks_audit_saved,
)
from scheduling.dispatch import DUE_TIME_SCHEDULER
from scheduling.intervals import describe_interval
from scheduling.jobs import CLEANUP, HEARTBEAT, JOBS, RECONCILE, SYNC, Job
from scheduling.platform.maintenance import run_history_summary
from scheduling.platform.schedule_checks import (
    CRON_FIELDS,
    SPEC_FIELDS,
    Clocked,
    Crontab,
    Interval,
    ScheduleSpec,
    Solar,
    When,
    crontab_next_after,
    name_errors,
    reserved_refuse,
    spec_clean,
    when_key,
)
from scheduling.platform.services import (
    SCHEDULE_FIELDS,
    TaskChange,
    header_schema,
    interval_delta,
    interval_schedule_get,
    schedule_row_get,
    tenant_headers,
)
from tenants.models import Tenant

__all__ = [
    "OVERVIEW_PAGE_MAX",
    "Clocked",
    "Crontab",
    "Interval",
    "OverviewJSONEncoder",
    "ScheduleNotFound",
    "Solar",
    "When",
    "json_or_raw",
    "periodic_task_status",
    "platform_schedules_ensure",
    "schedule_create",
    "schedule_delete",
    "schedule_describe",
    "schedule_disable",
    "schedule_enable",
    "schedule_ensure",
    "schedule_next_run",
    "schedule_status",
    "schedule_update",
    "schedules_overview",
    "schedules_overview_rows",
    "schedules_overview_tasks",
    "task_kind",
    "task_spec",
    "task_tenant_slug",
    "task_when",
]


class ScheduleNotFound(PeriodicTask.DoesNotExist):
    pass


# --- Services ---------------------------------------------------------------


def schedule_create(
    *,
    name: str,
    task_name: str,
    when: When,
    tenant: Tenant | None = None,
    args: list | tuple = (),
    kwargs: dict | None = None,
    queue: str | None = None,
    priority: int | None = None,
    expires: datetime | None = None,
    expire_seconds: int | None = None,
    enabled: bool = True,
    description: str = "",
) -> PeriodicTask:
    """A new PeriodicTask for a registered job; a ValidationError names every bad argument."""
    spec = ScheduleSpec(
        task_name=task_name,
        when=when,
        tenant=tenant,
        args=args,
        kwargs=kwargs,
        queue=queue,
        priority=priority,
        expires=expires,
        expire_seconds=expire_seconds,
        enabled=enabled,
        description=description,
    )
    errors = name_errors(name)
    try:
        spec = spec_clean(spec, fresh=SPEC_FIELDS, now=timezone.now())
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    task = PeriodicTask(name=name)
    try:
        with transaction.atomic():
            _task_assign(task, spec=spec, names=_fields_desired(spec))
            task.save()
            periodic_tasks_audit_saved(before={}, task_ids=[task.pk])
    except IntegrityError:
        if not PeriodicTask.objects.filter(name=name).exists():
            raise
        # Created by someone else since the check.
        raise ValidationError({"name": [f"A schedule named {name!r} already exists."]}) from None
    return task


def schedule_update(*, name: str, **changes: Any) -> TaskChange:
    """Change the given arguments of schedule_create; the result is validated as a whole."""
    unknown = set(changes) - SPEC_FIELDS
    if unknown:
        raise TypeError(f"schedule_update() got unknown argument(s): {', '.join(sorted(unknown))}")
    reserved_refuse(name)
    with transaction.atomic():
        task = _task_get(name, for_update=True)
        fresh = set(changes)
        if changes.get("enabled") is True and not task.enabled:
            # Re-enabled, a passed clocked time would fire at once and a passed expiry would
            # disable it again at once: both must be in the future, as on creation.
            fresh |= {"when", "expires"}
        spec = dataclasses.replace(task_spec(task=task), **changes)
        spec = spec_clean(spec, fresh=frozenset(fresh), now=timezone.now())
        before = periodic_task_snapshots(task_ids=[task.pk])
        change = _task_write(task, spec=spec)
        if change.written:
            periodic_tasks_audit_saved(before=before, task_ids=[task.pk])
        if changes.get("enabled") is True:
            from scheduling.platform.policies import schedule_pauses_lift  # imports this module

            schedule_pauses_lift(task_ids=[task.pk])  # enabled again: no longer paused
        return change


def schedule_ensure(
    *,
    name: str,
    task_name: str,
    when: When,
    tenant: Tenant | None = None,
    args: list | tuple = (),
    kwargs: dict | None = None,
    queue: str | None = None,
    priority: int | None = None,
    expires: datetime | None = None,
    expire_seconds: int | None = None,
    description: str = "",
) -> TaskChange:
    """Create the schedule, or bring an existing one to these settings.

    An existing schedule keeps its enabled flag: an operator who disabled it
    meant it, and a deploy that re-runs setup must not undo that.
    """
    fields = {
        "task_name": task_name,
        "when": when,
        "tenant": tenant,
        "args": args,
        "kwargs": kwargs,
        "queue": queue,
        "priority": priority,
        "expires": expires,
        "expire_seconds": expire_seconds,
        "description": description,
    }
    if PeriodicTask.objects.filter(name=name).exists():
        return schedule_update(name=name, **fields)
    return TaskChange(task=schedule_create(name=name, **fields), action="created")


def schedule_enable(*, name: str) -> TaskChange:
    """Enable the schedule; it must be valid as a whole (a registered job, its tenant...)."""
    return schedule_update(name=name, enabled=True)


def schedule_disable(*, name: str) -> TaskChange:
    """Disable the schedule, whatever else it holds: stopping is always allowed."""
    reserved_refuse(name)
    with transaction.atomic():
        task = _task_get(name, for_update=True)
        if not task.enabled:
            return TaskChange(task=task, action=None)
        before = periodic_task_snapshots(task_ids=[task.pk])
        task.enabled = False
        task.save(update_fields=_update_fields(["enabled"]))
        periodic_tasks_audit_saved(before=before, task_ids=[task.pk])
    return TaskChange(task=task, action="updated", fields=["enabled"])


def schedule_delete(*, name: str) -> None:
    reserved_refuse(name)
    with transaction.atomic():
        task = _task_get(name, for_update=True)
        before = periodic_task_snapshots(task_ids=[task.pk])
        task.delete()  # PeriodicTask.delete tells beat
        periodic_tasks_audit_deleted(before=before)


def schedule_status(*, name: str) -> dict[str, Any]:
    """The schedule as an operator reads it; also works for the `tenant:` tasks."""
    return periodic_task_status(task=_task_get(name, related=True), now=timezone.now())


# --- The platform's own schedules ---------------------------------------------


@dataclass(frozen=True)
class PlatformSchedule:
    name: str
    job: Job
    when: When
    expire_seconds: int | None = None


PLATFORM_SCHEDULES = (
    # A heartbeat that waited in the queue longer than its period proves nothing: let it expire.
    PlatformSchedule("platform:heartbeat", HEARTBEAT, Interval(seconds=60), expire_seconds=60),
    PlatformSchedule("platform:cleanup", CLEANUP, Crontab(minute="15", hour="3")),
    PlatformSchedule("platform:reconcile", RECONCILE, Interval(seconds=3600)),
)


def platform_schedules_ensure() -> list[TaskChange]:
    """Create or update the heartbeat, cleanup and reconcile schedules; idempotent."""
    return [
        schedule_ensure(
            name=item.name,
            task_name=item.job.task_name,
            when=item.when,
            expire_seconds=item.expire_seconds,
            description=item.job.description,
        )
        for item in PLATFORM_SCHEDULES
    ]


# --- Reading: status, description, next run ---------------------------------


def periodic_task_status(*, task: PeriodicTask, now: datetime) -> dict[str, Any]:
    """Any PeriodicTask as a dict; select_related the schedules and tenant_link__tenant."""
    return {
        "name": task.name,
        "task": task.task,
        "tenant": task_tenant_slug(task=task),
        "kind": task_kind(task=task),
        "enabled": task.enabled,
        "schedule": schedule_describe(task=task),
        "last_run_at": task.last_run_at,
        "total_run_count": task.total_run_count,
        "next_run_at": schedule_next_run(task=task, now=now),
        "one_off": task.one_off,
        "queue": task.queue,
        "priority": task.priority,
        "expires": task.expires,
        "expire_seconds": task.expire_seconds,
    }


OVERVIEW_PAGE_MAX = 1000


class OverviewJSONEncoder(json.JSONEncoder):
    """Times in full ISO 8601 with their offset, as `schedules_status --json` has always
    printed them (DjangoJSONEncoder would cut microseconds and write "Z")."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        return super().default(o)


def schedules_overview_tasks(*, tenant_slug: str | None = None) -> QuerySet[PeriodicTask]:
    """Every PeriodicTask (or one tenant's) by name, ready for schedules_overview_rows.

    A task is the tenant's by its TenantTask link, else by its `_schema_name`
    header (as task_tenant_slug reads it); both are matched in the query, so a
    slice of it is a page. An unknown slug is a ValidationError.
    """
    tasks = PeriodicTask.objects.select_related(
        *SCHEDULE_FIELDS, "tenant_link__tenant", "dispatch_state"
    )
    if tenant_slug is not None:
        if not Tenant.objects.filter(schema_name=tenant_slug).exists():
            raise ValidationError({"tenant": [f"No tenant with slug {tenant_slug!r}."]})
        headed = Q(
            tenant_link__isnull=True,
            headers__regex=rf'"_schema_name"\s*:\s*"{re.escape(tenant_slug)}"',
        )
        tasks = tasks.filter(Q(tenant_link__tenant__schema_name=tenant_slug) | headed)
    return tasks.order_by("name")


def schedules_overview_rows(*, tasks: Iterable[PeriodicTask]) -> list[dict[str, Any]]:
    """periodic_task_status of each task (a page of schedules_overview_tasks).

    Sync tasks also get `sync_runs`: their tenant's ok and failed SyncRun counts
    and last status (per tenant, not per task: a run does not record which
    periodic task sent it). Other tasks get `sync_runs: None`. Only the page's
    tenants are counted, in one query, so a page costs the same number of
    queries however many tenants there are.
    """
    now = timezone.now()
    rows = [periodic_task_status(task=task, now=now) for task in tasks]
    synced = {row["tenant"] for row in rows if row["task"] == SYNC.task_name and row["tenant"]}
    real = set(Tenant.objects.filter(schema_name__in=synced).values_list("schema_name", flat=True))
    summaries = run_history_summary(schemas=real)
    for row in rows:
        summary = summaries.get(row["tenant"]) if row["task"] == SYNC.task_name else None
        row["sync_runs"] = dataclasses.asdict(summary) if summary else None
    return rows


def schedules_overview(*, tenant_slug: str | None = None) -> list[dict[str, Any]]:
    """Every row, read a page of OVERVIEW_PAGE_MAX at a time (schedules_status prints all)."""
    pages = Paginator(schedules_overview_tasks(tenant_slug=tenant_slug), OVERVIEW_PAGE_MAX)
    return [
        row
        for number in pages.page_range
        for row in schedules_overview_rows(tasks=pages.page(number))
    ]


def task_tenant_slug(*, task: PeriodicTask) -> str | None:
    """The tenant from the TenantTask link, else from the `_schema_name` header."""
    link = getattr(task, "tenant_link", None)  # RelatedObjectDoesNotExist is an AttributeError
    if link is not None:
        return link.tenant.schema_name
    slug = header_schema(task)
    return None if not slug or slug == get_public_schema_name() else slug


def task_kind(*, task: PeriodicTask) -> str | None:
    """The TenantTask kind for a linked task, else the job's kind; None if unregistered."""
    link = getattr(task, "tenant_link", None)
    if link is not None:
        return link.kind
    job = JOBS.get(task.task)
    return job.kind if job else None


def schedule_describe(*, task: PeriodicTask) -> str:
    """The schedule in words: "every 15 minutes", "At 03:15 AM UTC (15 3 * * *)"..."""
    if task.interval_id:
        return describe_interval(interval_delta(task.interval))
    if task.crontab_id:
        return _crontab_describe(task.crontab)
    if task.solar_id:
        solar = task.solar
        place = f"{_plain(solar.latitude)}, {_plain(solar.longitude)}"
        return f"{solar.get_event_display().lower()} at {place}"
    if task.clocked_id:
        return f"once at {task.clocked.clocked_time.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return "no schedule"


def schedule_next_run(*, task: PeriodicTask, now: datetime) -> datetime | None:
    """When beat will next send the task (now, if overdue); None if it never will.

    Under the project's scheduler (CELERY_BEAT_SCHEDULER), once it has read the task:
    its due time, the next slot plus the task's jitter (select_related
    "dispatch_state" to read many tasks at once). A change saved in the last second
    may not be in it yet; the scheduler reads changes within a second.

    Otherwise, an estimate that follows DatabaseScheduler: the schedule counts from
    last_run_at, or from date_changed when it never ran (then from 30 years back if
    start_time is set, so the first run comes at start_time); nothing runs before
    start_time.
    """
    if not task.enabled or (task.expires and task.expires <= now):
        return None
    if settings.CELERY_BEAT_SCHEDULER == DUE_TIME_SCHEDULER:
        state = getattr(task, "dispatch_state", None)  # no row: an AttributeError
        if state is not None and state.active and state.due_at is not None:
            return max(state.due_at, now)
    if task.one_off and task.total_run_count > 0:
        return None  # beat disables it on its next tick
    reference = task.last_run_at or task.date_changed or now
    if task.last_run_at is None and task.start_time:
        reference -= timedelta(days=365 * 30)
    due = _due_after(task, reference, now=now)
    if due is not None and task.start_time and now < task.start_time:
        due = max(due, task.start_time)
        if task.crontab_id:  # as PeriodicTask.due_start_time: the first firing after start_time
            due = _crontab_next(task.crontab, after=task.start_time)
    return max(due, now) if due is not None else None


# --- Reading and writing rows -------------------------------------------------


def _task_get(name: str, *, for_update: bool = False, related: bool = False) -> PeriodicTask:
    tasks = PeriodicTask.objects.all()
    if for_update:
        tasks = tasks.select_for_update()
    if related:
        tasks = tasks.select_related(*SCHEDULE_FIELDS, "tenant_link__tenant")
    task = tasks.filter(name=name).first()
    if task is None:
        raise ScheduleNotFound(f"No schedule named {name!r}.")
    return task


def task_spec(*, task: PeriodicTask) -> ScheduleSpec:
    """The row read back into schedule_create's terms, to merge changes into."""
    slug = task_tenant_slug(task=task)
    return ScheduleSpec(
        task_name=task.task,
        when=task_when(task=task),
        tenant=Tenant.objects.filter(schema_name=slug).first() if slug else None,
        args=json_or_raw(task.args, "[]"),
        kwargs=json_or_raw(task.kwargs, "{}"),
        queue=task.queue,
        priority=task.priority,
        expires=task.expires,
        expire_seconds=task.expire_seconds,
        enabled=task.enabled,
        description=task.description,
    )


def task_when(*, task: PeriodicTask) -> When | None:
    """The task's schedule row as a When; None for a task that has none."""
    if task.interval_id:
        return Interval(seconds=int(interval_delta(task.interval).total_seconds()))
    if task.crontab_id:
        cron = task.crontab
        fields = {name: getattr(cron, name) for name in CRON_FIELDS}
        return Crontab(**fields, timezone=str(cron.timezone))
    if task.solar_id:
        solar = task.solar
        return Solar(event=solar.event, latitude=solar.latitude, longitude=solar.longitude)
    if task.clocked_id:
        return Clocked(at=task.clocked.clocked_time)
    return None


def _fields_desired(spec: ScheduleSpec) -> dict[str, Any]:
    headers = json.loads(tenant_headers(tenant=spec.tenant)) if spec.tenant else {}
    return {
        "task": spec.task_name,
        "headers": headers,
        "args": spec.args,
        "kwargs": spec.kwargs,
        "queue": spec.queue,
        "priority": spec.priority,
        "expires": spec.expires,
        "expire_seconds": spec.expire_seconds,
        "enabled": spec.enabled,
        "description": spec.description,
        "one_off": isinstance(spec.when, Clocked),
        "schedule": when_key(spec.when),
    }


def _fields_current(task: PeriodicTask) -> dict[str, Any]:
    # JSON text is compared decoded, so spacing alone never causes a write.
    return {
        "task": task.task,
        "headers": json_or_raw(task.headers, "{}"),
        "args": json_or_raw(task.args, "[]"),
        "kwargs": json_or_raw(task.kwargs, "{}"),
        "queue": task.queue,
        "priority": task.priority,
        "expires": task.expires,
        "expire_seconds": task.expire_seconds,
        "enabled": task.enabled,
        "description": task.description,
        "one_off": task.one_off,
        "schedule": when_key(task_when(task=task)),
    }


def _task_write(task: PeriodicTask, *, spec: ScheduleSpec) -> TaskChange:
    desired, current = _fields_desired(spec), _fields_current(task)
    stale = sorted(name for name, value in desired.items() if current[name] != value)
    if not stale:
        return TaskChange(task=task, action=None)
    _task_assign(task, spec=spec, names=stale)
    task.save(update_fields=_update_fields(stale))
    return TaskChange(task=task, action="updated", fields=stale)


def _task_assign(task: PeriodicTask, *, spec: ScheduleSpec, names: Any) -> None:
    desired = _fields_desired(spec)
    for name in names:
        if name == "schedule":
            for fk, row in _schedule_rows(spec.when).items():
                setattr(task, fk, row)
        elif name in ("headers", "args", "kwargs"):
            setattr(task, name, json.dumps(desired[name]))
        else:
            setattr(task, name, desired[name])


def _update_fields(names: list[str]) -> list[str]:
    fields = {"date_changed"}  # auto_now is only written when listed
    for name in names:
        fields.update(SCHEDULE_FIELDS if name == "schedule" else [name])
    if "enabled" in names:
        fields.add("last_run_at")  # PeriodicTask.save clears it when disabling
    return sorted(fields)


def _schedule_rows(when: When) -> dict[str, Any]:
    rows: dict[str, Any] = dict.fromkeys(SCHEDULE_FIELDS)
    if isinstance(when, Interval):
        rows["interval"] = interval_schedule_get(seconds=when.seconds)
    elif isinstance(when, Crontab):
        rows["crontab"] = schedule_row_get(
            CrontabSchedule,
            **{name: getattr(when, name) for name in CRON_FIELDS},
            timezone=when.timezone,
        )
    elif isinstance(when, Solar):
        rows["solar"], _ = SolarSchedule.objects.get_or_create(  # unique_together: no duplicates
            event=when.event, latitude=when.latitude, longitude=when.longitude
        )
    else:
        rows["clocked"] = schedule_row_get(ClockedSchedule, clocked_time=when.at)
    return rows


def json_or_raw(text: str | None, default: str) -> Any:
    """Decoded JSON; undecodable text is returned as is, which never equals a valid value."""
    try:
        return json.loads(text or default)
    except ValueError:
        return text


# --- Schedule arithmetic ------------------------------------------------------


def _due_after(task: PeriodicTask, reference: datetime, *, now: datetime) -> datetime | None:
    if task.interval_id:
        return reference + interval_delta(task.interval)
    if task.crontab_id:
        return _crontab_next(task.crontab, after=reference)
    if task.clocked_id:
        return task.clocked.clocked_time
    if task.solar_id:
        return _solar_next(task.solar, after=reference, now=now)
    return None


def _crontab_next(cron: CrontabSchedule, *, after: datetime) -> datetime | None:
    zone = cron.timezone if isinstance(cron.timezone, ZoneInfo) else ZoneInfo(str(cron.timezone))
    try:
        schedule = celery_crontab(**{name: getattr(cron, name) for name in CRON_FIELDS})
    except (ValueError, ParseException):
        return None  # a row edited into nonsense in the admin; beat skips it too
    return crontab_next_after(schedule, zone=zone, after=after)


def _crontab_describe(cron: CrontabSchedule) -> str:
    expression = " ".join(
        str(getattr(cron, name)).replace(" ", "") or "*"
        for name in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    )
    words = cron.human_readable
    return words if words.startswith(expression) else f"{words} ({expression})"


def _solar_next(solar: SolarSchedule, *, after: datetime, now: datetime) -> datetime | None:
    if importlib.util.find_spec("ephem") is None:
        return None  # beat cannot run it either
    schedule = celery_solar(solar.event, solar.latitude, solar.longitude, nowfun=lambda: now)
    return now + schedule.remaining_estimate(after)


def _plain(number: Decimal) -> str:
    return format(number.normalize(), "f")
