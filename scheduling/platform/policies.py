"""Per-schedule policies of the project's scheduler, pause with a note, and the reads of
the occurrence history (issue 7).

The policies live on ScheduleState, the scheduler's due-time row. The scheduler owns
that row's other columns (first_seen_at, active, timing, next_slot_at, due_at,
last_slot_at) and rewrites them at any time, so nothing here saves the row whole:
every write is an UPDATE of the policy or pause columns only. A database trigger
reports a policy change to the scheduler (migration scheduling_platform 0004).

A pause is the task disabled (PeriodicTask.enabled, which every scheduler obeys) and
a note on its state row saying why. Reconcile and the tenant's resume keep a paused
task disabled (scheduling.platform.services.schedule_pause_holds).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling.audit.models import Action
from scheduling.audit.services import (
    Actor,
    audit_noted,
    audit_record,
    changes_between,
    json_safe,
    periodic_task_snapshots,
)
from scheduling.platform.models import Occurrence, ScheduleState, TenantTask
from scheduling.platform.schedules import schedule_next_run
from scheduling.platform.services import (
    SCHEDULE_FIELDS,
    digest_dispatcher_ensure,
    sync_schedule_ensure,
)
from tenants.models import Tenant

POLICY_FIELDS = ("overlap", "catchup_window", "run_all", "jitter")
CATCHUP_WINDOW_MAX = 30 * 24 * 3600  # seconds: 30 days
JITTER_MAX = 24 * 3600  # seconds: one day
PAUSE_NOTE_MAX = 500  # the audit trail keeps notes of up to 500 characters


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()


# --- Checks ------------------------------------------------------------------------


def policy_clean(values: dict[str, Any]) -> dict[str, Any]:
    """The given policy values, checked; one ValidationError keyed by field otherwise.

    overlap: one of ScheduleState.Overlap; catchup_window: whole seconds, 0 to 30 days;
    run_all: True or False; jitter: whole seconds, 0 to a day, or None for the default.
    """
    checks = {
        "overlap": _overlap_check,
        "catchup_window": _catchup_window_check,
        "run_all": _run_all_check,
        "jitter": _jitter_check,
    }
    cleaned, errors = {}, {}
    for name, value in values.items():
        try:
            cleaned[name] = checks[name](value)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def _overlap_check(value: Any) -> str:
    if value not in ScheduleState.Overlap.values:
        choices = ", ".join(ScheduleState.Overlap.values)
        raise ValidationError(f"The overlap policy must be one of {choices}, not {value!r}.")
    return str(value)


def _whole_seconds(value: Any, *, name: str, high: int) -> int:
    if isinstance(value, dt.timedelta):
        if value % dt.timedelta(seconds=1):
            raise ValidationError(f"The {name} must be whole seconds.")
        value = int(value.total_seconds())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"The {name} must be a whole number of seconds.")
    if not 0 <= value <= high:
        raise ValidationError(f"The {name} must be from 0 to {high} seconds, not {value}.")
    return value


def _catchup_window_check(value: Any) -> int:
    return _whole_seconds(value, name="catch-up window", high=CATCHUP_WINDOW_MAX)


def _run_all_check(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("run_all must be True or False.")
    return value


def _jitter_check(value: Any) -> int | None:
    return None if value is None else _whole_seconds(value, name="jitter", high=JITTER_MAX)


def pause_note_clean(note: Any) -> str:
    """The note, stripped; a ValidationError when it is empty or too long."""
    text = note.strip() if isinstance(note, str) else ""
    if not text:
        raise ValidationError({"note": ["Say why the schedule is paused."]})
    if len(text) > PAUSE_NOTE_MAX:
        raise ValidationError(
            {"note": [f"The note can be at most {PAUSE_NOTE_MAX} characters (it has {len(text)})."]}
        )
    if "\x00" in text:
        raise ValidationError({"note": ["The note can't contain NUL characters."]})
    return text


# --- Services ----------------------------------------------------------------------


def schedule_policy_set(
    periodic_task: PeriodicTask,
    *,
    overlap: str = UNCHANGED,
    catchup_window: int | dt.timedelta = UNCHANGED,
    run_all: bool = UNCHANGED,
    jitter: int | dt.timedelta | None = UNCHANGED,
    actor: Actor | None = None,
) -> ScheduleState:
    """Set the given policies of the task's schedule; the others stay as they are.

    Raises ValidationError (keyed by field) before anything is written. A change is
    recorded in the audit trail as a change of the periodic task; the scheduler picks
    it up through the policy trigger.
    """
    given = {
        "overlap": overlap,
        "catchup_window": catchup_window,
        "run_all": run_all,
        "jitter": jitter,
    }
    cleaned = policy_clean({name: value for name, value in given.items() if value is not UNCHANGED})
    with transaction.atomic():
        task = _task_locked(periodic_task)
        state = _state_locked(task)
        changed = {name: value for name, value in cleaned.items() if getattr(state, name) != value}
        if changed:
            before = _audited_values(task_id=task.pk)
            ScheduleState.objects.filter(pk=task.pk).update(**changed)
            _audit(task_id=task.pk, before=before, actor=actor)
            for name, value in changed.items():
                setattr(state, name, value)
    return state


def schedule_pause(periodic_task: PeriodicTask, *, note: str, actor: Actor | None = None) -> bool:
    """Disable the task and keep the note saying why; False if it was paused already.

    The note is required (ValidationError otherwise) and goes into the audit trail.
    """
    note = pause_note_clean(note)
    with transaction.atomic():
        task = _task_locked(periodic_task)
        state = _state_locked(task)
        if state.paused_at is not None and not task.enabled:
            return False
        before = _audited_values(task_id=task.pk)
        ScheduleState.objects.filter(pk=task.pk).update(pause_note=note, paused_at=timezone.now())
        if task.enabled:
            _enabled_save(task, enabled=False)
        with audit_noted(note):
            _audit(task_id=task.pk, before=before, actor=actor)
    periodic_task.enabled = False
    return True


def schedule_resume(periodic_task: PeriodicTask, *, actor: Actor | None = None) -> bool:
    """Lift the pause and enable the task again; False if that changed nothing.

    A tenant's own task is enabled as its tenant allows: a paused tenant's sync stays
    disabled until the tenant resumes, and its digest dispatcher runs only while some
    user has digests on. Any other task is enabled.
    """
    with transaction.atomic():
        task = _task_locked(periodic_task)
        paused = ScheduleState.objects.filter(pk=task.pk, paused_at__isnull=False)
        if task.enabled and not paused.exists():
            return False
        before = _audited_values(task_id=task.pk)
        paused.update(pause_note="", paused_at=None)
        if not _tenant_rule_apply(task):
            _enabled_save(task, enabled=True)
        changed = _audit(task_id=task.pk, before=before, actor=actor)
    periodic_task.refresh_from_db(fields=["enabled"])
    return changed


def schedule_pauses_lift(*, task_ids: list[int]) -> int:
    """Drop the pause notes of the tasks among `task_ids` that are enabled now.

    For the admin's enable and toggle actions, which enable tasks in bulk without
    going through schedule_resume: a note left behind would be mistaken for a pause
    as soon as the task is disabled again. Returns how many were dropped.
    """
    return ScheduleState.objects.filter(
        periodic_task_id__in=task_ids, periodic_task__enabled=True, paused_at__isnull=False
    ).update(pause_note="", paused_at=None)


def _task_locked(periodic_task: PeriodicTask) -> PeriodicTask:
    """The task's row, locked until the transaction ends: a concurrent delete or pause waits."""
    task = PeriodicTask.objects.select_for_update().filter(pk=periodic_task.pk).first()
    if task is None:
        raise ValidationError(f"The periodic task {periodic_task.name!r} no longer exists.")
    return task


def _state_locked(task: PeriodicTask) -> ScheduleState:
    """The task's state row, locked; created with the scheduler's defaults if missing.

    ON CONFLICT DO NOTHING: a row the scheduler created meanwhile is kept as it is,
    first_seen_at included.
    """
    ScheduleState.objects.bulk_create(
        [
            ScheduleState(
                periodic_task_id=task.pk,
                first_seen_at=timezone.now(),
                catchup_window=settings.SCHEDULER_CATCHUP_WINDOW,
            )
        ],
        ignore_conflicts=True,
    )
    return ScheduleState.objects.select_for_update().get(pk=task.pk)


def _enabled_save(task: PeriodicTask, *, enabled: bool) -> None:
    # PeriodicTask.save clears last_run_at when disabling, and tells stock beat.
    task.enabled = enabled
    task.save(update_fields=["enabled", "last_run_at", "date_changed"])


def _tenant_rule_apply(task: PeriodicTask) -> bool:
    """Bring a tenant's own task in line with its tenant; False for any other task."""
    link = TenantTask.objects.select_related("tenant").filter(periodic_task=task).first()
    if link is None:
        return False
    ensure = sync_schedule_ensure if link.kind == TenantTask.Kind.SYNC else digest_dispatcher_ensure
    ensure(tenant=link.tenant)
    return True


# --- Audit -------------------------------------------------------------------------


def _audited_values(*, task_id: int) -> dict[str, Any]:
    """The task's settings, policies and pause, as the audit trail compares them."""
    snapshot = periodic_task_snapshots(task_ids=[task_id])[task_id]
    state = ScheduleState.objects.filter(pk=task_id).values(*POLICY_FIELDS, "paused_at").first()
    policies = state or {
        "overlap": ScheduleState.Overlap.SKIP,
        "catchup_window": settings.SCHEDULER_CATCHUP_WINDOW,
        "run_all": False,
        "jitter": None,
    }
    values = {name: json_safe(policies[name]) for name in POLICY_FIELDS}
    paused = bool(state and state["paused_at"]) and not snapshot.values["enabled"]
    return {
        "_name": snapshot.name,
        "_tenant": snapshot.tenant_slug,
        **snapshot.values,
        **values,
        "paused": paused,
    }


def _audit(*, task_id: int, before: dict[str, Any], actor: Actor | None) -> bool:
    """Record what changed since `before`; False when nothing did."""
    after = _audited_values(task_id=task_id)
    name, tenant_slug = after.pop("_name"), after.pop("_tenant")
    old, new = changes_between(
        {key: value for key, value in before.items() if not key.startswith("_")}, after
    )
    if old or new:
        audit_record(
            action=Action.PERIODIC_TASK_CHANGED,
            target=name,
            before=old,
            after=new,
            tenant_slug=tenant_slug,
            actor=actor,
        )
    return bool(old or new)


# --- Reads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    note: str
    since: dt.datetime


def schedule_pause_get(*, periodic_task_id: int) -> Pause | None:
    """The task's pause, or None when it is not paused (a note on an enabled task is stale)."""
    row = (
        ScheduleState.objects.filter(
            pk=periodic_task_id, paused_at__isnull=False, periodic_task__enabled=False
        )
        .values_list("pause_note", "paused_at")
        .first()
    )
    return None if row is None else Pause(note=row[0], since=row[1])


def tenant_sync_task(*, tenant: Tenant) -> PeriodicTask | None:
    """The tenant's own sync task, through its link; None while it is missing."""
    link = (
        TenantTask.objects.select_related("periodic_task")
        .filter(tenant=tenant, kind=TenantTask.Kind.SYNC)
        .first()
    )
    return None if link is None else link.periodic_task


@dataclass(frozen=True)
class SyncSchedule:
    next_run_at: dt.datetime | None  # None while paused, in either way, or without a task
    pause: Pause | None


def tenant_sync_schedule(*, tenant: Tenant, now: dt.datetime) -> SyncSchedule:
    """When the tenant's sync next runs, and its pause if the schedule is paused: one query."""
    link = (
        TenantTask.objects.select_related(
            *(f"periodic_task__{name}" for name in SCHEDULE_FIELDS),
            "periodic_task__dispatch_state",
        )
        .filter(tenant=tenant, kind=TenantTask.Kind.SYNC)
        .first()
    )
    if link is None:
        return SyncSchedule(next_run_at=None, pause=None)
    task = link.periodic_task
    state = getattr(task, "dispatch_state", None)  # a missing row is an AttributeError
    pause = None
    if state is not None and state.paused_at is not None and not task.enabled:
        pause = Pause(note=state.pause_note, since=state.paused_at)
    next_run = schedule_next_run(task=task, now=now) if tenant.is_active else None
    return SyncSchedule(next_run_at=next_run, pause=pause)


@dataclass(frozen=True)
class OccurrencePage:
    """One page of an occurrence history, found without counting the history."""

    occurrences: list[Occurrence]
    number: int
    has_next: bool
    jobs: dict[int, str]  # periodic task id: what its job is called, "Sync"

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def tenant_occurrence_page(
    *, tenant: Tenant, number: int, per_page: int, status: str | None = None
) -> OccurrencePage:
    """Page `number` of the tenant's occurrences, newest slot first, optionally of one
    outcome (a status, or expired: Occurrence.outcome_filter).

    Only the occurrences of the tenant's own tasks (its TenantTask links) recorded for
    its own schema. Each task's rows are read newest first along the (task, slot)
    unique index and the few lists merged, so a page costs the same at any size of
    history; there is no count, only whether an older page exists.
    """
    links = TenantTask.objects.filter(tenant=tenant).values_list("periodic_task_id", "kind")
    jobs = {task_id: TenantTask.Kind(kind).label for task_id, kind in links}
    if not jobs:
        return OccurrencePage(occurrences=[], number=number, has_next=False, jobs=jobs)
    end = number * per_page + 1  # one more than the page, to tell whether another follows
    now = timezone.now()
    per_task = [
        _task_occurrences(task_id, tenant=tenant, status=status, now=now) for task_id in jobs
    ]
    if len(per_task) > 1:
        first, *others = (rows[:end] for rows in per_task)
        merged = first.union(*others, all=True).order_by("-slot_at", "-id")
    else:
        merged = per_task[0]
    rows = list(merged[(number - 1) * per_page : end])
    return OccurrencePage(
        occurrences=rows[:per_page], number=number, has_next=len(rows) > per_page, jobs=jobs
    )


def _task_occurrences(
    task_id: int, *, tenant: Tenant, status: str | None, now: dt.datetime
) -> QuerySet[Occurrence]:
    rows = Occurrence.objects.filter(periodic_task_id=task_id, schema_name=tenant.schema_name)
    if status:
        rows = rows.filter(Occurrence.outcome_filter(status, now))
    return rows.order_by("-slot_at", "-id")
