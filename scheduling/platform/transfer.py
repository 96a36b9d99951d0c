"""Schedules to a file and back: what schedules_export writes and schedules_import reads.

The file holds the platform's own periodic tasks and, per tenant (by slug),
the tenant's schedule settings and its periodic tasks. It is not a dump of
django-celery-beat's tables: row ids, shared schedule rows, run counts and the
tenant links do not travel. An import rebuilds every task through the services
(tenants.services for tenants, scheduling.platform.schedules for operator
schedules), so signals, the audit trail and reconcile see ordinary changes.

The per-tenant tasks (`tenant:<slug>:sync`, `tenant:<slug>:digests`) are made
from their tenant's settings by the tenant's services: the file lists them so
a reader sees them, and an import checks that they agree with their tenant.

Each task carries its policy (scheduling.platform.policies): overlap, catch-up
window, run_all, jitter, and the pause note while the task is paused. A file
without policies (written before they travelled; still version 1) leaves the
policies and pauses here as they are. A policy given is given whole, and applied
through the policy services. How a pause and `enabled` go together:

- An operator schedule (platform or tenant) is enabled as the file says. A task
  the file pauses must say enabled false. A pause here that the file does not have
  is lifted, and the task is then enabled or disabled as the file says; one with
  another note is lifted and made again with the file's note. A file without a
  policy keeps a pause here: the task stays disabled whatever its enabled says.
- A per-tenant task's enabled is never taken from the file: its tenant's services
  make it (the sync runs while the tenant is active, the digest dispatcher while
  some user wants digests), and a pause keeps it disabled. The file's enabled of a
  sync is checked against its tenant's status unless the file pauses it. A pause
  lifted leaves the task as its tenant allows. A digest dispatcher this database
  does not have (no user wants digests) takes no policy; it is reported skipped.

An import checks the whole file before it writes anything and reports every
problem with its JSON path. Only the schedules of a tenant the import itself
creates are checked while applying, because the schedule checks need the
saved tenant; everything is applied in one transaction, which any problem
rolls back, tenant schemas included. Nothing is ever deleted.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling.audit.services import Actor, acting_as
from scheduling.jobs import DIGEST_DISPATCH, JOBS, SYNC
from scheduling.platform.models import ScheduleState
from scheduling.platform.policies import (
    POLICY_FIELDS,
    pause_note_clean,
    policy_clean,
    schedule_pause,
    schedule_policy_set,
    schedule_resume,
)
from scheduling.platform.schedule_checks import (
    CRON_FIELDS,
    SPEC_FIELDS,
    Clocked,
    Crontab,
    Interval,
    ScheduleSpec,
    Solar,
    When,
    name_errors,
    spec_clean,
    when_key,
)
from scheduling.platform.schedules import (
    json_or_raw,
    schedule_create,
    schedule_update,
    task_spec,
    task_tenant_slug,
    task_when,
)
from scheduling.platform.services import SCHEDULE_FIELDS, tenant_schedules_ensure
from tenants.models import Tenant
from tenants.services import (
    tenant_pause,
    tenant_provision,
    tenant_resume,
    tenant_settings_update,
    tenant_validate,
)

FORMAT = "scheduler-platform/schedules"
VERSION = 1
ACTOR = "schedules_import"

_TOP_KEYS = {"format", "version", "exported_at", "platform", "tenants"}
_TENANT_KEYS = {"slug", "name", "timezone", "sync_interval", "status", "tasks"}
_TASK_KEYS = {
    "name",
    "task",
    "schedule",
    "args",
    "kwargs",
    "headers",
    "enabled",
    "one_off",
    "start_time",
    "expires",
    "expire_seconds",
    "description",
    "queue",
    "priority",
    "policy",
}
_POLICY_KEYS = {*POLICY_FIELDS, "pause_note"}
_WHEN_KEYS = {
    "interval": ({"seconds"}, {"seconds"}),  # (allowed, required)
    "crontab": ({*CRON_FIELDS, "timezone"}, set()),
    "solar": ({"event", "latitude", "longitude"}, {"event", "latitude", "longitude"}),
    "clocked": ({"at"}, {"at"}),
}
# The per-tenant tasks by kind: tenant:<slug>:<kind> runs this job.
_DERIVED_JOBS = {job.kind: job for job in (SYNC, DIGEST_DISPATCH)}
# schedule_create's argument names as the file spells them.
_FILE_KEYS = {"task_name": "task", "when": "schedule"}
# What task_document reads besides the task: one query for any number of tasks.
_TASK_RELATED = (*SCHEDULE_FIELDS, "tenant_link__tenant", "dispatch_state")


# --- Export -----------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    document: dict[str, Any]
    orphans: list[str]  # tasks whose header names a tenant that does not exist: left out


def schedules_export() -> Export:
    """Every periodic task, under the platform or under its tenant, with each tenant's
    schedule settings. Secrets (the source token, the webhook secret) stay behind."""
    tenants = {t.schema_name: _tenant_document(t) for t in Tenant.objects.order_by("schema_name")}
    platform, orphans = [], []
    tasks = PeriodicTask.objects.select_related(*_TASK_RELATED)
    for task in tasks.order_by("name").iterator(chunk_size=2000):
        slug = task_tenant_slug(task=task)
        if slug is None:
            platform.append(task_document(task=task))
        elif slug in tenants:
            tenants[slug]["tasks"].append(task_document(task=task))
        else:
            orphans.append(task.name)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": timezone.now().isoformat(),
        "platform": platform,
        "tenants": list(tenants.values()),
    }
    return Export(document=document, orphans=orphans)


def _tenant_state(tenant: Tenant) -> dict[str, Any]:
    return {
        "slug": tenant.schema_name,
        "name": tenant.name,
        "timezone": tenant.timezone,
        "sync_interval": int(tenant.sync_interval.total_seconds()),
        "status": tenant.status,
    }


def _tenant_document(tenant: Tenant) -> dict[str, Any]:
    return {**_tenant_state(tenant), "tasks": []}


def task_document(*, task: PeriodicTask) -> dict[str, Any]:
    """A PeriodicTask as the file holds it; select_related _TASK_RELATED."""
    return {
        "name": task.name,
        "task": task.task,
        "schedule": _when_document(task_when(task=task)),
        "args": json_or_raw(task.args, "[]"),
        "kwargs": json_or_raw(task.kwargs, "{}"),
        "headers": json_or_raw(task.headers, "{}"),
        "enabled": task.enabled,
        "one_off": task.one_off,
        "start_time": _iso(task.start_time),
        "expires": _iso(task.expires),
        "expire_seconds": task.expire_seconds,
        "description": task.description,
        "queue": task.queue,
        "priority": task.priority,
        "policy": _policy_document(task),
    }


def _policy_document(task: PeriodicTask) -> dict[str, Any]:
    """The task's policies, and its pause note while it is paused.

    Without a state row the task has the scheduler's defaults. A note on an enabled
    task is stale (the task was enabled again some other way), so it does not travel.
    """
    state = getattr(task, "dispatch_state", None)  # a missing row is an AttributeError
    if state is None:
        return {
            "overlap": ScheduleState.Overlap.SKIP.value,
            "catchup_window": settings.SCHEDULER_CATCHUP_WINDOW,
            "run_all": False,
            "jitter": None,
            "pause_note": None,
        }
    paused = state.paused_at is not None and not task.enabled
    return {
        "overlap": state.overlap,
        "catchup_window": state.catchup_window,
        "run_all": state.run_all,
        "jitter": state.jitter,
        "pause_note": state.pause_note if paused else None,
    }


def _when_document(when: When | None) -> dict[str, Any] | None:
    if isinstance(when, Interval):
        return {"type": "interval", "seconds": when.seconds}
    if isinstance(when, Crontab):
        return {"type": "crontab", **dataclasses.asdict(when)}
    if isinstance(when, Solar):
        coordinates = {"latitude": float(when.latitude), "longitude": float(when.longitude)}
        return {"type": "solar", "event": when.event, **coordinates}
    if isinstance(when, Clocked):
        return {"type": "clocked", "at": _iso(when.at)}
    return None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


# --- Import: reading and checking the file --------------------------------------------


@dataclass(frozen=True)
class _TaskItem:
    path: str
    name: str
    spec: ScheduleSpec | None  # None for a per-tenant task, which its tenant's services make
    policy: dict[str, Any] | None  # cleaned, pause_note None when not paused; None: not given
    enabled: bool  # what the file says, for the report


@dataclass(frozen=True)
class _TenantItem:
    path: str
    slug: str
    name: str
    timezone: str
    sync_interval: timedelta
    status: str
    stored: Tenant | None
    tasks: list[_TaskItem]


@dataclass
class _Reader:
    """Walks the file once, keeping every problem as "<JSON path>: <what is wrong>"."""

    problems: list[str] = dataclasses.field(default_factory=list)
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # task name -> its path
    now: datetime = dataclasses.field(default_factory=timezone.now)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def keys(self, entry: Any, path: str, *, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(entry, dict):
            self.problem(path, "must be an object.")
            return False
        for key in sorted(set(entry) - allowed):
            self.problem(f"{path}.{key}", "is not a key this format has.")
        for key in sorted(required - set(entry)):
            self.problem(f"{path}.{key}", "is missing.")
        return required <= set(entry)

    def typed(self, entry: dict, path: str, key: str, kind: type | tuple[type, ...]) -> bool:
        value = entry.get(key)
        if isinstance(value, kind) and not (isinstance(value, bool) and kind is int):
            return True
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        self.problem(f"{path}.{key}", f"must be {names}; got {value!r}.")
        return False

    def errors(self, path: str, error: ValidationError, names: dict[str, str]) -> None:
        """A ValidationError keyed by argument or field, at the file's own keys."""
        if not hasattr(error, "error_dict"):
            self.problem(path, " ".join(error.messages))
            return
        for field, messages in error.message_dict.items():
            key = names.get(field, field)
            self.problem(f"{path}.{key}" if key != "__all__" else path, " ".join(messages))


def _plan(text: str) -> tuple[list[_TaskItem], list[_TenantItem]]:
    """The file's platform tasks and tenants, checked; a ValidationError lists every problem."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValidationError([f"$: not valid JSON ({exc})."]) from None
    reader = _Reader()
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValidationError([f"$.format: must be {FORMAT!r}: this is not a schedules export."])
    version = document.get("version")
    if type(version) is not int or version != VERSION:
        raise ValidationError([f"$.version: {version!r} is not a version this platform reads."])
    reader.keys(document, "$", allowed=_TOP_KEYS, required=_TOP_KEYS - {"exported_at"})
    platform = [
        _task_read(reader, entry, f"$.platform[{i}]", tenant=None)
        for i, entry in enumerate(_listed(reader, document, "$", "platform"))
    ]
    slugs: dict[str, str] = {}
    tenants = [
        _tenant_read(reader, entry, f"$.tenants[{i}]", slugs=slugs)
        for i, entry in enumerate(_listed(reader, document, "$", "tenants"))
    ]
    if reader.problems:
        raise ValidationError(reader.problems)
    return [item for item in platform if item], [item for item in tenants if item]


def _listed(reader: _Reader, entry: dict, path: str, key: str) -> list:
    if key not in entry:
        return []  # reported as missing
    return entry[key] if reader.typed(entry, path, key, list) else []


def _tenant_read(
    reader: _Reader, entry: Any, path: str, *, slugs: dict[str, str]
) -> _TenantItem | None:
    required = _TENANT_KEYS - {"tasks"}
    if not reader.keys(entry, path, allowed=_TENANT_KEYS, required=required):
        return None
    types = {"slug": str, "name": str, "timezone": str, "sync_interval": int, "status": str}
    if not all([reader.typed(entry, path, key, kind) for key, kind in types.items()]):
        return None
    slug = entry["slug"]
    if slug in slugs:
        reader.problem(f"{path}.slug", f"{slug!r} is also at {slugs[slug]}.")
        return None
    slugs[slug] = path
    try:
        interval = timedelta(seconds=entry["sync_interval"])
    except OverflowError:
        reader.problem(f"{path}.sync_interval", "is far too long.")
        return None
    stored = Tenant.objects.filter(schema_name=slug).first()
    _tenant_check(reader, entry, path, interval=interval, stored=stored)
    item = _TenantItem(
        path=path,
        slug=slug,
        name=entry["name"],
        timezone=entry["timezone"],
        sync_interval=interval,
        status=entry["status"],
        stored=stored,
        tasks=[],
    )
    for i, task in enumerate(_listed(reader, entry, path, "tasks")):
        read = _task_read(reader, task, f"{path}.tasks[{i}]", tenant=item)
        if read:
            item.tasks.append(read)
    return item


def _tenant_check(
    reader: _Reader, entry: dict, path: str, *, interval: timedelta, stored: Tenant | None
) -> None:
    """A new tenant must pass onboarding's checks; a stored one, those of its settings."""
    names = {"schema_name": "slug"}
    if entry["status"] not in Tenant.Status.values:
        reader.problem(f"{path}.status", f"must be one of {', '.join(Tenant.Status.values)}.")
    try:
        if stored is None:
            tenant_validate(
                name=entry["name"],
                slug=entry["slug"],
                timezone_name=entry["timezone"],
                sync_interval=interval,
            )
        else:
            candidate = Tenant(timezone=entry["timezone"], sync_interval=interval)
            others = {f.name for f in Tenant._meta.fields} - {"timezone", "sync_interval"}
            candidate.clean_fields(exclude=others)
    except ValidationError as exc:
        reader.errors(path, exc, names)


def _task_read(
    reader: _Reader, entry: Any, path: str, *, tenant: _TenantItem | None
) -> _TaskItem | None:
    if not reader.keys(entry, path, allowed=_TASK_KEYS, required={"name", "task", "schedule"}):
        return None
    if not (reader.typed(entry, path, "name", str) and reader.typed(entry, path, "task", str)):
        return None
    name, job = entry["name"], JOBS.get(entry["task"])
    if name in reader.names:
        reader.problem(f"{path}.name", f"{name!r} is also at {reader.names[name]}.")
        return None
    reader.names[name] = path
    job_fits = False  # spec_clean would only repeat what is said here
    if job is None:
        registered = ", ".join(sorted(JOBS))
        reader.problem(f"{path}.task", f"{entry['task']!r} is not a registered job ({registered}).")
    elif job.scope == "tenant" and tenant is None:
        reader.problem(f"{path}.task", f"{job.task_name} runs in a tenant: list it under one.")
    elif job.scope == "platform" and tenant is not None:
        reader.problem(f"{path}.task", f"{job.task_name} is a platform job: list it there.")
    else:
        job_fits = True
    _headers_check(reader, entry, path, tenant=tenant)
    when = _when_read(reader, entry["schedule"], f"{path}.schedule")
    clocked = isinstance(when, Clocked)
    if when is not None and entry.get("one_off", clocked) != clocked:
        reader.problem(f"{path}.one_off", "is true for a clocked schedule, and false otherwise.")
    policy = _policy_read(reader, entry, path)
    given = entry.get("policy")  # as written: a bad note is reported once, as itself
    paused = isinstance(given, dict) and given.get("pause_note") is not None
    enabled = entry.get("enabled", True) is True
    if paused and enabled:
        reader.problem(f"{path}.enabled", "must be false: the policy says the task is paused.")
    if name.startswith("tenant:"):
        _derived_check(reader, entry, path, tenant=tenant, paused=paused)
        return _TaskItem(path=path, name=name, spec=None, policy=policy, enabled=enabled)
    if entry.get("start_time") is not None:
        reader.problem(f"{path}.start_time", "must be null: operator schedules have none.")
    spec = ScheduleSpec(
        task_name=entry["task"],
        when=when,
        args=entry.get("args", []),
        kwargs=entry.get("kwargs", {}),
        queue=entry.get("queue"),
        priority=entry.get("priority"),
        expires=_datetime_read(reader, entry.get("expires"), f"{path}.expires"),
        expire_seconds=entry.get("expire_seconds"),
        enabled=entry.get("enabled", True),
        description=entry.get("description", ""),
    )
    item = _TaskItem(path=path, name=name, spec=spec, policy=policy, enabled=enabled)
    if job_fits and when is not None and (tenant is None or tenant.stored is not None):
        # A new tenant's schedules are checked once it is saved (see the module's docstring).
        _spec_check(reader, item, tenant=tenant.stored if tenant else None)
    return item


def _headers_check(reader: _Reader, entry: dict, path: str, *, tenant: _TenantItem | None) -> None:
    expected = {"_schema_name": tenant.slug} if tenant else {}
    headers = entry.get("headers", expected)
    if headers == expected:
        return
    named = headers.get("_schema_name") if isinstance(headers, dict) else None
    if tenant and isinstance(named, str) and named != tenant.slug:
        reader.problem(
            f"{path}.headers",
            f"names tenant {named!r}, but the task is listed under {tenant.slug!r}; "
            "a tenant's task runs in that tenant's schema only.",
        )
    else:
        reader.problem(f"{path}.headers", f"must be {json.dumps(expected)}.")


def _derived_check(
    reader: _Reader, entry: dict, path: str, *, tenant: _TenantItem | None, paused: bool
) -> None:
    """A per-tenant task must be its tenant's, and what its tenant's services make of it.

    `paused`: the file pauses it, and then _task_read has checked `enabled` already.
    """
    if tenant is None:
        reader.problem(f"{path}.name", "a 'tenant:' task belongs to a tenant: list it under it.")
        return
    kinds = {f"tenant:{tenant.slug}:{kind}": kind for kind in _DERIVED_JOBS}
    kind = kinds.get(entry["name"])
    if kind is None:
        allowed = " or ".join(repr(name) for name in kinds)
        reader.problem(f"{path}.name", f"a 'tenant:' task of {tenant.slug!r} is {allowed}.")
        return
    job = _DERIVED_JOBS[kind]
    expected = {
        "task": job.task_name,
        "args": [],
        "kwargs": {},
        "expires": None,
        "expire_seconds": None,
        "description": job.description,
        "queue": None,
        "priority": None,
    }
    if kind == SYNC.kind:  # the digest dispatcher's schedule and state follow its users
        seconds = int(tenant.sync_interval.total_seconds())
        expected |= {"schedule": {"type": "interval", "seconds": seconds}, "start_time": None}
        if not paused:
            expected["enabled"] = tenant.status == Tenant.Status.ACTIVE
    for key, value in expected.items():
        if key in entry and entry[key] != value:
            reader.problem(
                f"{path}.{key}",
                f"{entry['name']} follows its tenant's settings: expected {json.dumps(value)}.",
            )


def _policy_read(reader: _Reader, entry: dict, path: str) -> dict[str, Any] | None:
    """The task's policy, cleaned as the policy services clean it; None when not given.

    A file written before policies travelled has none, and then the task's policies
    and pause are left as they are. When given, every key must be: a policy is the
    whole of it, as an export writes it, so that nothing is left to a guess.
    """
    if "policy" not in entry:
        return None
    policy, at = entry["policy"], f"{path}.policy"
    if not reader.keys(policy, at, allowed=_POLICY_KEYS, required=_POLICY_KEYS):
        return None
    known = len(reader.problems)
    cleaned: dict[str, Any] = {}
    try:
        cleaned = policy_clean({name: policy[name] for name in POLICY_FIELDS})
    except ValidationError as exc:
        reader.errors(at, exc, {})
    note = policy["pause_note"]
    if note is not None and not isinstance(note, str):
        reader.problem(f"{at}.pause_note", f"must be a string or null; got {note!r}.")
    elif note is not None:
        try:
            note = pause_note_clean(note)
        except ValidationError as exc:
            reader.errors(at, exc, {"note": "pause_note"})
    return {**cleaned, "pause_note": note} if len(reader.problems) == known else None


def _when_read(reader: _Reader, value: Any, path: str) -> When | None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in _WHEN_KEYS:
        reader.problem(path, f"must be an object whose type is one of {', '.join(_WHEN_KEYS)}.")
        return None
    allowed, required = _WHEN_KEYS[kind]
    if not reader.keys(value, path, allowed=allowed | {"type"}, required=required):
        return None
    fields = {key: value[key] for key in allowed if key in value}
    if kind == "interval":
        return Interval(**fields)
    if kind == "crontab":
        return Crontab(**fields)
    if kind == "solar":
        return Solar(**fields)
    at = _datetime_read(reader, fields["at"], f"{path}.at")
    return Clocked(at=at) if at else None


def _datetime_read(reader: _Reader, value: Any, path: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or timezone.is_naive(moment):
        reader.problem(path, f"must be an ISO 8601 time with its UTC offset; got {value!r}.")
        return None
    return moment


def _spec_check(reader: _Reader, item: _TaskItem, *, tenant: Tenant | None) -> None:
    """schedule_create's or schedule_update's own checks, without writing."""
    spec = dataclasses.replace(item.spec, tenant=tenant)
    stored = _task_stored(item.name)
    errors = {} if stored else name_errors(item.name)
    # As schedule_update: only what changes must lie in the future (a clocked time, expires).
    fresh = SPEC_FIELDS if stored is None else _spec_changes(spec, task_spec(task=stored))
    try:
        spec_clean(spec, fresh=frozenset(fresh), now=reader.now)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        reader.errors(item.path, ValidationError(errors), _FILE_KEYS)


def _spec_changes(spec: ScheduleSpec, stored: ScheduleSpec) -> set[str]:
    def same(field: str) -> bool:
        new, old = getattr(spec, field), getattr(stored, field)
        if field == "when":
            try:
                return when_key(new) == when_key(old)
            except (ArithmeticError, TypeError, ValueError):  # not clean: spec_clean says why
                return False
        if field == "tenant":
            return getattr(new, "pk", None) == getattr(old, "pk", None)
        return new == old

    return {field for field in SPEC_FIELDS if not same(field)}


# --- Import: applying it ----------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    lines: list[str]
    counts: Counter

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['created']} created, {c['updated']} updated, "
            f"{c['unchanged']} unchanged, {c['skipped']} skipped."
        )


def schedules_import(*, text: str, dry_run: bool = False) -> ImportReport:
    """Bring the file's tenants and schedules into this database; report what changed.

    Raises a ValidationError listing every problem, and then nothing is
    changed. With dry_run the same work is done and rolled back, so the report
    is exact. Tenants are created without users or data; nothing is deleted.
    """
    platform, tenants = _plan(text)
    with acting_as(Actor.system(ACTOR)), transaction.atomic():
        before = _states(platform, tenants)
        problems = _apply(platform, tenants)
        if problems:
            raise ValidationError(problems)  # leaving the block rolls everything back
        report = _report(platform, tenants, before=before, after=_states(platform, tenants))
        if dry_run:
            transaction.set_rollback(True)
    return report


def _apply(platform: list[_TaskItem], tenants: list[_TenantItem]) -> list[str]:
    reader = _Reader()
    for item in platform:
        _task_apply(reader, item, tenant=None)
    for tenant_item in tenants:
        try:
            tenant = _tenant_apply(tenant_item)
        except ValidationError as exc:
            reader.errors(tenant_item.path, exc, {"schema_name": "slug"})
            continue
        for item in tenant_item.tasks:
            if item.spec is not None:
                _task_apply(reader, item, tenant=tenant)
            else:
                _derived_apply(reader, item)
    return reader.problems


def _tenant_apply(item: _TenantItem) -> Tenant:
    tenant = Tenant.objects.filter(schema_name=item.slug).first()
    if tenant is None:
        tenant = tenant_provision(
            name=item.name,
            slug=item.slug,
            timezone_name=item.timezone,
            sync_interval=item.sync_interval,
        )
    else:
        tenant_settings_update(
            tenant=tenant,
            source_kind=tenant.source_kind,
            source_url=tenant.source_url,
            source_token=None,  # kept
            sync_interval=item.sync_interval,
            timezone=ZoneInfo(item.timezone),
        )
    if item.status != tenant.status:
        change = tenant_pause if item.status == Tenant.Status.PAUSED else tenant_resume
        change(tenant=tenant, note=ACTOR)
    tenant_schedules_ensure(tenant=tenant)  # also puts back a per-tenant task deleted by hand
    return tenant


def _task_apply(reader: _Reader, item: _TaskItem, *, tenant: Tenant | None) -> None:
    """An operator schedule: its settings, then its policy, as the file has them.

    The file's `enabled` holds, but for a pause: a task the file pauses is disabled (the
    file says so too), and a file without a policy leaves a pause here in place.
    """
    spec = dataclasses.replace(item.spec, tenant=tenant)
    try:
        stored = _task_stored(item.name)
        if stored is not None and item.policy is None and _pause_note(stored) is not None:
            spec = dataclasses.replace(spec, enabled=False)  # the file says nothing of pauses
        elif stored is not None and item.policy is not None:
            # First: a pause disables the task, so the settings then change less.
            _pause_set(stored, note=item.policy["pause_note"], enabling=spec.enabled)
            stored = _task_stored(item.name)
        if stored is None:
            schedule_create(
                name=item.name, **{field: getattr(spec, field) for field in SPEC_FIELDS}
            )
        elif changes := _spec_changes(spec, task_spec(task=stored)):
            schedule_update(name=item.name, **{field: getattr(spec, field) for field in changes})
        if item.policy is not None:
            task = _task_stored(item.name)
            _pause_set(task, note=item.policy["pause_note"], enabling=spec.enabled)  # if new
            _policy_apply(_task_stored(item.name), policy=item.policy)
    except ValidationError as exc:
        reader.errors(item.path, exc, _FILE_KEYS)


def _derived_apply(reader: _Reader, item: _TaskItem) -> None:
    """A per-tenant task's policy; its settings are its tenant's, applied already.

    Lifting a pause leaves the task enabled as its tenant allows (schedule_resume).
    A digest dispatcher that its tenant's services did not make has nothing to hold a
    policy: the report says it was skipped.
    """
    task = _task_stored(item.name)
    if item.policy is None or task is None:
        return
    try:
        _pause_set(task, note=item.policy["pause_note"], enabling=False)
        _policy_apply(_task_stored(item.name), policy=item.policy)
    except ValidationError as exc:
        reader.errors(item.path, exc, {})


def _pause_note(task: PeriodicTask) -> str | None:
    """The note of the task's pause, None when it is not paused; select_related its state."""
    return _policy_document(task)["pause_note"]


def _pause_set(task: PeriodicTask, *, note: str | None, enabling: bool) -> None:
    """Bring the task's pause to `note` (None: not paused) through the pause services.

    Another note is another pause: the one here is lifted first (schedule_pause keeps
    a pause as it is). A lift that `enabling`, the file's enabled, is about to make is
    left to schedule_update, which lifts the pause itself once it has checked that a
    clocked time or an expiry is still ahead; schedule_resume checks neither.
    """
    current = _pause_note(task)
    if current == note:
        return
    if current is not None and not (note is None and enabling):
        schedule_resume(task)
    if note is not None:
        schedule_pause(task, note=note)


def _policy_apply(task: PeriodicTask, *, policy: dict[str, Any]) -> None:
    """Only what differs: the service would otherwise make a state row nobody asked for."""
    current = _policy_document(task)
    changed = {name: policy[name] for name in POLICY_FIELDS if policy[name] != current[name]}
    if changed:
        schedule_policy_set(task, **changed)


def _task_stored(name: str) -> PeriodicTask | None:
    return PeriodicTask.objects.select_related(*_TASK_RELATED).filter(name=name).first()


# --- Import: the report ------------------------------------------------------------------


def _watched(tenant: _TenantItem) -> list[tuple[str, bool]]:
    """The tenant's task names to report on, and whether the file lists each."""
    listed = [item.name for item in tenant.tasks]
    derived = [f"tenant:{tenant.slug}:{kind}" for kind in _DERIVED_JOBS]
    return [(name, True) for name in listed] + [
        (name, False) for name in derived if name not in listed
    ]


_State = dict[tuple[str, str], dict | None]


def _states(platform: list[_TaskItem], tenants: list[_TenantItem]) -> _State:
    """Each reported tenant and task, keyed ("tenant", slug) or ("task", name), as the file
    would hold it; None when it does not exist."""
    names = [item.name for item in platform]
    names += [name for tenant in tenants for name, _ in _watched(tenant)]
    slugs = [tenant.slug for tenant in tenants]
    states: _State = {("task", name): None for name in names}
    states |= {("tenant", slug): None for slug in slugs}
    tasks = PeriodicTask.objects.select_related(*_TASK_RELATED).filter(name__in=names)
    states |= {("task", task.name): task_document(task=task) for task in tasks}
    stored = Tenant.objects.filter(schema_name__in=slugs)
    return states | {("tenant", t.schema_name): _tenant_state(t) for t in stored}


def _report(
    platform: list[_TaskItem],
    tenants: list[_TenantItem],
    *,
    before: _State,
    after: _State,
) -> ImportReport:
    keys = [(("task", item.name), True) for item in platform]
    notes = {}  # what the file says but this database keeps, and why
    for tenant in tenants:
        keys.append((("tenant", tenant.slug), True))
        keys += [(("task", name), listed) for name, listed in _watched(tenant)]
        if tenant.stored is not None and tenant.stored.name != tenant.name:
            # A tenant's name is its own, not a schedule setting: never imported.
            notes[("tenant", tenant.slug)] = (
                f"; its name stays {tenant.stored.name!r}, not {tenant.name!r}"
            )
    for item in [*platform, *(item for tenant in tenants for item in tenant.tasks)]:
        document = after[("task", item.name)]
        if item.policy is None and item.enabled and document and document["policy"]["pause_note"]:
            notes[("task", item.name)] = "; it stays paused, as the file has no policy"
    lines, counts = [], Counter(created=0, updated=0, unchanged=0, skipped=0)
    for key, listed in keys:
        old, new = before[key], after[key]
        label = " ".join(key) if key[0] == "tenant" else key[1]
        if new is None:  # only a digest dispatcher: its tenant's services found no use for it
            outcome, line = "skipped", f"skipped {label} (made when a user turns digests on)"
        elif old is None:
            outcome, line = "created", f"created {label}"
        elif changed := sorted(key for key in new if new[key] != old[key]):
            outcome, line = "updated", f"updated {label} ({', '.join(changed)})"
        else:
            outcome, line = "unchanged", f"unchanged {label}"
        if listed or new is not None:
            counts[outcome] += 1
            lines.append(line + notes.get(key, ""))
    return ImportReport(lines=lines, counts=counts)
