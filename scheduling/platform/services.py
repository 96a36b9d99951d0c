"""Per-tenant periodic tasks in django-celery-beat's tables, kept in step with the tenants.

Every function is idempotent. A call that would change nothing writes nothing:
each write to PeriodicTask makes the stock beat reload every schedule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_tenants.utils import get_public_schema_name, schema_context, schema_exists

from scheduling.jobs import DIGEST_DISPATCH, SYNC, Job, job_for_task
from scheduling.models import UserSchedule
from scheduling.platform.models import ScheduleState, TenantTask
from tenants.models import Tenant

logger = logging.getLogger(__name__)


def tenant_task_name(*, tenant: Tenant, kind: str) -> str:
    return f"tenant:{tenant.schema_name}:{kind}"


def tenant_headers(*, tenant: Tenant) -> str:
    return json.dumps({"_schema_name": tenant.schema_name})


# A PeriodicTask's four ways to be scheduled, as its foreign keys.
SCHEDULE_FIELDS = ("interval", "crontab", "solar", "clocked")


def schedule_row_get(model: type, **lookup) -> object:
    """The schedule row with these values, created if missing.

    django-celery-beat has no unique constraint on most schedule tables, so
    duplicates may exist: take the oldest.
    """
    return model.objects.filter(**lookup).order_by("pk").first() or model.objects.create(**lookup)


def interval_schedule_get(*, seconds: int) -> IntervalSchedule:
    return schedule_row_get(IntervalSchedule, every=seconds, period=IntervalSchedule.SECONDS)


def interval_delta(interval: IntervalSchedule) -> timedelta:
    return timedelta(**{interval.period: interval.every})


@dataclass(frozen=True)
class TaskChange:
    task: PeriodicTask | None  # None when no task exists and none is wanted
    action: str | None  # "created", "updated", or None when nothing was written
    fields: list[str] = field(default_factory=list)

    @property
    def written(self) -> bool:
        return self.action is not None

    def describe(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.task.name}{detail}"


def _task_upsert(*, tenant: Tenant, job: Job, kind: str, fields: dict) -> TaskChange:
    """Create or update the tenant's task of `kind`; returns (task, written)."""
    name = tenant_task_name(tenant=tenant, kind=kind)
    desired = {
        "task": job.task_name,
        "headers": tenant_headers(tenant=tenant),
        "args": "[]",
        "kwargs": "{}",
        "description": job.description,
        **fields,
    }
    task = PeriodicTask.objects.filter(name=name).first()
    action, stale = None, {}
    if task is None:
        task = PeriodicTask.objects.create(name=name, **desired)
        action = "created"
    else:
        stale = {key: value for key, value in desired.items() if getattr(task, key) != value}
        if stale:
            for key, value in stale.items():
                setattr(task, key, value)
            task.save()
            action = "updated"
    note = _link_ensure(tenant=tenant, kind=kind, task=task)
    if note and not (action == "created" and note == "tenant link"):
        action, stale = action or "updated", {**stale, note: None}
    return TaskChange(task=task, action=action, fields=sorted(stale))


def _link_ensure(*, tenant: Tenant, kind: str, task: PeriodicTask) -> str:
    """Link `task` as the tenant's one task of `kind`; returns what was written, or "".

    A task the tenant's link pointed to before (say, renamed by hand in the admin)
    is deleted, so the tenant never has two tasks of one kind running.
    """
    link = TenantTask.objects.filter(tenant=tenant, kind=kind).first()
    if link is not None and link.periodic_task_id == task.pk:
        return ""
    TenantTask.objects.filter(periodic_task=task).delete()  # linked to another tenant or kind
    note = "tenant link"
    if link is not None:
        replaced = PeriodicTask.objects.get(pk=link.periodic_task_id)
        replaced.delete()  # cascades the old link
        note = f"replaces {replaced.name!r}"
    TenantTask.objects.create(tenant=tenant, kind=kind, periodic_task=task)
    return note


# What every per-tenant task holds besides its interval: hand edits of these are put back.
_STANDING_FIELDS = {
    "crontab": None,
    "solar": None,
    "clocked": None,
    "one_off": False,
    "expires": None,
    "expire_seconds": None,
}


def schedule_pause_holds(*, name: str) -> bool:
    """Whether the task named `name` is paused with a note (scheduling.platform.policies).

    A paused task stays disabled, whatever its tenant's state says. A note left on a
    task enabled since in some other way (the schedules API, a bulk update) is stale:
    it is dropped here, so that a later disable, by a tenant pause say, is not taken
    for the old pause and kept after the tenant resumes.
    """
    noted = ScheduleState.objects.filter(periodic_task__name=name, paused_at__isnull=False)
    noted.filter(periodic_task__enabled=True).update(pause_note="", paused_at=None)
    return noted.exists()


def sync_schedule_ensure(*, tenant: Tenant) -> TaskChange:
    """`tenant:<schema>:sync` every sync_interval, enabled while the tenant is active and
    the schedule is not paused."""
    interval = interval_schedule_get(seconds=int(tenant.sync_interval.total_seconds()))
    name = tenant_task_name(tenant=tenant, kind=TenantTask.Kind.SYNC)
    paused = schedule_pause_holds(name=name)  # first: it also drops a stale note
    enabled = tenant.is_active and not paused
    return _task_upsert(
        tenant=tenant,
        job=SYNC,
        kind=TenantTask.Kind.SYNC,
        fields={"interval": interval, "enabled": enabled, **_STANDING_FIELDS},
    )


def dispatch_phase(*, tenant: Tenant, every: int) -> int:
    """The tenant's fixed offset, in seconds, within each dispatch period.

    Taken from a hash of the slug, so it is the same in every process and on
    every run, and tenants spread over the period instead of all firing at :00.
    """
    digest = hashlib.sha256(tenant.schema_name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % every


def _next_phase_start(*, tenant: Tenant, every: int, now: datetime) -> datetime:
    phase = dispatch_phase(tenant=tenant, every=every)
    epoch = int(now.timestamp())
    start = epoch - epoch % every + phase
    if start <= epoch:
        start += every
    return datetime.fromtimestamp(start, tz=UTC)


def _digests_wanted(*, tenant: Tenant) -> bool:
    if not tenant.is_active or not schema_exists(tenant.schema_name):
        return False  # a schema still being onboarded, or lost, has no one to send to
    with schema_context(tenant.schema_name):
        # NULL next_due_at means off or paused (a DB constraint), so this reads the partial index.
        live = UserSchedule.objects.filter(next_due_at__isnull=False, user__is_active=True)
        return live.exists()


def _tenant_lock(*, tenant: Tenant, purpose: str) -> None:
    """Serialise this purpose for this tenant until the transaction ends.

    Two users changing their digests at once would otherwise each decide on a
    snapshot without the other's change, and could leave the dispatcher off
    while one of them has digests on, or both try to create it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{purpose}:{tenant.schema_name}"]
        )


def digest_dispatcher_ensure(*, tenant: Tenant) -> TaskChange:
    """`tenant:<schema>:digests`, enabled exactly while the tenant is active, some user
    of it has a live schedule, and the schedule is not paused.

    It is created on the first schedule and afterwards only enabled or disabled.
    It runs every DIGEST_DISPATCH_INTERVAL seconds at the tenant's phase: the
    phase is set through start_time whenever the task starts running again, and
    beat then keeps the rhythm from its last run.
    """
    with transaction.atomic():
        # Lock first, then read: under READ COMMITTED the reads below then see
        # whatever the previous holder committed.
        _tenant_lock(tenant=tenant, purpose="digests")
        name = tenant_task_name(tenant=tenant, kind=TenantTask.Kind.DIGESTS)
        task = PeriodicTask.objects.filter(name=name).first()
        paused = schedule_pause_holds(name=name)  # first: it also drops a stale note
        wanted = not paused and _digests_wanted(tenant=tenant)
        if task is None and not wanted:
            return TaskChange(task=None, action=None)
        every = settings.DIGEST_DISPATCH_INTERVAL
        interval = interval_schedule_get(seconds=every)
        fields: dict = {"enabled": wanted, **_STANDING_FIELDS}
        if task is None or (wanted and not task.enabled) or task.interval_id != interval.pk:
            fields |= {
                "interval": interval,
                "start_time": _next_phase_start(tenant=tenant, every=every, now=timezone.now()),
                "last_run_at": None,
            }
        return _task_upsert(
            tenant=tenant, job=DIGEST_DISPATCH, kind=TenantTask.Kind.DIGESTS, fields=fields
        )


def tenant_schedules_ensure(*, tenant: Tenant) -> list[TaskChange]:
    """Every periodic task the tenant should have, as it should be."""
    return [sync_schedule_ensure(tenant=tenant), digest_dispatcher_ensure(tenant=tenant)]


def headers_parse(text: str | None) -> dict:
    """A task's headers as a dict; ValidationError unless they are a JSON object."""
    try:
        headers = json.loads(text or "{}")
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        raise ValidationError('The headers must be a JSON object, such as {"k": "v"}.')
    return headers


def header_schema(task: PeriodicTask) -> str | None:
    """The `_schema_name` a task's headers name, or None."""
    try:
        schema = headers_parse(task.headers).get("_schema_name")
    except ValidationError:
        return None
    return schema if isinstance(schema, str) else None


def periodic_task_run_now(*, task: PeriodicTask) -> str:
    """Send `task` once, now, as beat would send it; return the Celery task id.

    Its own headers go with it, so a tenant's task runs in the tenant's schema
    and not in the schema of whoever pressed the button. Raises ValidationError
    for an unregistered job, a tenant job whose header names no tenant, or
    arguments that are not a JSON list and object.
    """
    job = job_for_task(task.task)
    if job is None:
        raise ValidationError(f"{task.name}: {task.task!r} is not a registered job.")
    schema = header_schema(task)
    if job.scope == "tenant" and not Tenant.objects.filter(schema_name=schema or "").exists():
        raise ValidationError(f"{task.name}: its _schema_name header names no tenant.")
    try:
        args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    except ValueError:
        args = kwargs = None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValidationError(f"{task.name}: its args must be a JSON list and kwargs an object.")
    headers = {
        **headers_parse(task.headers),
        "_schema_name": schema or get_public_schema_name(),
    }
    # The row's relative expiry as beat would apply it, else the job's: a message left
    # waiting in the queue is not worth starting forever.
    options = {"expires": task.expire_seconds or job.expires}
    if task.queue:
        options["queue"] = task.queue
    if task.priority is not None:
        options["priority"] = task.priority
    result = current_app.send_task(task.task, args=args, kwargs=kwargs, headers=headers, **options)
    return result.id


def _tasks_with_a_tenant_header():
    return PeriodicTask.objects.filter(headers__contains='"_schema_name"')


def tenant_schedules_remove(*, tenant: Tenant) -> int:
    """Delete every periodic task of the tenant: linked to it, named after it, or
    sent with its schema in the header (an operator's schedule of a tenant job)."""
    with transaction.atomic():
        headed = [
            task.pk
            for task in _tasks_with_a_tenant_header().filter(headers__contains=tenant.schema_name)
            if header_schema(task) == tenant.schema_name
        ]
        doomed = PeriodicTask.objects.filter(
            Q(tenant_link__tenant=tenant)
            | Q(name__startswith=f"tenant:{tenant.schema_name}:")
            | Q(pk__in=headed)
        )
        deleted, _ = doomed.delete()
        PeriodicTasks.update_changed()
    return deleted


def _orphans_delete(*, schemas: set[str]) -> list[str]:
    """Delete tasks of tenants that are gone, by name or by header; return what was deleted."""
    deleted = []
    for task in PeriodicTask.objects.filter(
        Q(name__startswith="tenant:") | Q(pk__in=_tasks_with_a_tenant_header())
    ).order_by("name"):
        named = task.name.split(":")[1] if task.name.startswith("tenant:") else None
        schema = header_schema(task)
        gone = (named is not None and named not in schemas) or (
            schema is not None and schema != get_public_schema_name() and schema not in schemas
        )
        if gone:
            task.delete()
            deleted.append(f"deleted {task.name} (no such tenant)")
    return deleted


def schedules_reconcile(*, dry_run: bool = False) -> list[str]:
    """Bring every tenant's periodic tasks in line with the tenant; return what changed.

    Repairs rows edited in bulk or deleted by hand, tenants created before a
    schedule kind existed, and tasks left behind by tenants that are gone. Each
    tenant is repaired in its own transaction, so beat's change lock is held
    briefly and one broken tenant does not stop the rest. With dry_run the same
    work is done in one transaction and rolled back, so the report is exact.
    """
    if not dry_run:
        return _reconcile_all()
    with transaction.atomic():
        changes = _reconcile_all()
        transaction.set_rollback(True)
    return changes


def _reconcile_all() -> list[str]:
    changes: list[str] = []
    for tenant in Tenant.objects.order_by("schema_name"):
        try:
            with transaction.atomic():
                changes += [
                    c.describe() for c in tenant_schedules_ensure(tenant=tenant) if c.written
                ]
        except DatabaseError as exc:
            logger.exception("Reconcile of %s failed", tenant.schema_name)
            changes.append(f"failed {tenant.schema_name}: {type(exc).__name__}")
    with transaction.atomic():
        changes += _orphans_delete(
            schemas=set(Tenant.objects.values_list("schema_name", flat=True))
        )
        if changes:
            PeriodicTasks.update_changed()
    return changes
