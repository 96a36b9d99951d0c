"""The audit trail: who is acting, and recording what they changed.

Every event goes to the public schema (the platform trail, read by operators
across tenants) and, when it concerns a tenant, also to that tenant's schema
(the tenant's own history). Both writes join the caller's transaction, so a
change that is rolled back leaves no event behind.

The actor comes from a context variable: the request middleware sets the
signed-in user or operator, and anything else (Celery tasks, commands) is the
system unless it says otherwise with `acting_as`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import connection, transaction
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import get_public_schema_name, schema_context, schema_exists

from scheduling.audit.models import Action, ActorKind, AuditEvent
from scheduling.models import UserSchedule
from scheduling.platform.services import SCHEDULE_FIELDS, header_schema, interval_delta
from tenants.models import Tenant

# Events about a tenant that never go into its schema: it does not exist yet, or is going away.
PLATFORM_ONLY_ACTIONS = frozenset({Action.TENANT_CREATED, Action.TENANT_DELETED})


@dataclass(frozen=True)
class Actor:
    kind: str  # an ActorKind value
    label: str
    id: uuid.UUID | None = None

    @classmethod
    def system(cls, detail: str = "") -> Actor:
        return cls(kind=ActorKind.SYSTEM, label=f"system: {detail}" if detail else "system")

    @classmethod
    def for_user(cls, user: Any, *, schema_name: str | None = None) -> Actor:
        """The actor for a signed-in account of the schema the connection is on.

        Staff in the public schema are operators. A tenant user flagged staff
        is still only a user of that tenant.
        """
        schema_name = schema_name or connection.schema_name
        is_operator = schema_name == get_public_schema_name() and (
            user.is_staff or user.is_superuser
        )
        kind = ActorKind.OPERATOR if is_operator else ActorKind.USER
        return cls(kind=kind, label=user.email, id=user.public_id)


_actor: ContextVar[Actor | None] = ContextVar("audit_actor", default=None)
_note: ContextVar[str] = ContextVar("audit_note", default="")


def actor_current() -> Actor:
    return _actor.get() or Actor.system()


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Attribute every change recorded inside the block to `actor`."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


@contextmanager
def audit_noted(note: str) -> Iterator[str]:
    """Attach the actor's note (why they did it) to every change recorded inside the block."""
    token = _note.set(note.strip()[:500])
    try:
        yield note
    finally:
        _note.reset(token)


def json_safe(value: Any) -> Any:
    """A JSON value for a model field's value: durations in seconds, times in ISO 8601."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, str):
        return str(value)  # TextChoices members become plain strings
    return value


def changes_between(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the keys whose values differ, as (before, after)."""
    keys = [key for key in after if before.get(key) != after[key]]
    keys += [key for key in before if key not in after]
    return (
        {key: before[key] for key in keys if key in before},
        {key: after[key] for key in keys if key in after},
    )


def audit_record(
    *,
    action: str,
    target: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    tenant_slug: str = "",
    actor: Actor | None = None,
) -> None:
    """Record one change in the platform trail and, for a tenant, in its own schema.

    `before` and `after` must already be JSON-safe and hold no secret values.
    Runs inside the caller's transaction; the connection's schema is restored.
    """
    actor = actor or actor_current()
    fields = {
        "actor_kind": actor.kind,
        "actor_label": actor.label[:254],
        "actor_id": actor.id,
        "tenant_slug": tenant_slug,
        "action": action,
        "target": target[:255],
        "before": dict(before),
        "after": dict(after),
        "note": _note.get(),
    }
    with transaction.atomic():
        event = _event_write(schema=get_public_schema_name(), fields=fields)
        if _tenant_copy_wanted(action=action, tenant_slug=tenant_slug):
            # Same public_id and time in both schemas: one event, stored twice.
            fields |= {"public_id": event.public_id, "occurred_at": event.occurred_at}
            _event_write(schema=tenant_slug, fields=fields)


def _tenant_copy_wanted(*, action: str, tenant_slug: str) -> bool:
    if not tenant_slug or tenant_slug == get_public_schema_name():
        return False
    # A tenant row whose schema is missing must still be editable: the public copy suffices.
    return action not in PLATFORM_ONLY_ACTIONS and schema_exists(tenant_slug)


def _event_write(*, schema: str, fields: dict[str, Any]) -> AuditEvent:
    # The table is in every schema and a tenant's search path ends in public: name the schema.
    with schema_context(schema):
        return AuditEvent.objects.create(**fields)


# --- Snapshots of audited fields ------------------------------------------------
# pre_save reads the stored row, post_save compares it with what was written. The
# snapshot rides on the instance between the two signals of one save().

_SNAPSHOT_ATTR = "_audit_before"
SECRET_FIELDS = frozenset({"source_token", "webhook_secret"})


@dataclass(frozen=True)
class Snapshot:
    fields: tuple[str, ...]  # the audited fields this save writes
    values: dict[str, Any] | None  # as stored before the save; None for a new row


def _secret_fingerprint(value: str) -> str:
    # Enough to tell "changed" from "unchanged" without keeping the secret around.
    return hashlib.sha256(value.encode()).hexdigest() if value else ""


def _field_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _secret_fingerprint(value) if key in SECRET_FIELDS else json_safe(value)
        for key, value in values.items()
    }


def _instance_values(instance: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return _field_values({name: getattr(instance, name) for name in fields})


def audit_snapshot_take(
    *, instance: Any, fields: tuple[str, ...], update_fields: frozenset[str] | None
) -> None:
    """Remember the stored values of the audited fields this save is about to write."""
    if update_fields is not None:
        # Only these are written; anything else set on the instance never reaches the row.
        fields = tuple(name for name in fields if name in update_fields)
    values = None
    if fields and instance.pk is not None and not instance._state.adding:
        row = type(instance)._default_manager.filter(pk=instance.pk).values(*fields).first()
        values = None if row is None else _field_values(row)
    setattr(instance, _SNAPSHOT_ATTR, Snapshot(fields=fields, values=values))


def _snapshot_pop(instance: Any) -> Snapshot | None:
    return instance.__dict__.pop(_SNAPSHOT_ATTR, None)


def _saved_changes(
    *, instance: Any, fields: tuple[str, ...], created: bool
) -> tuple[dict, dict] | None:
    """(before, after) of a save, secrets masked; None when no audited field changed."""
    snapshot = _snapshot_pop(instance)
    if created:
        return _secrets_masked({}, _instance_values(instance, fields))
    if snapshot is None or snapshot.values is None or not snapshot.fields:
        return None
    before, after = changes_between(snapshot.values, _instance_values(instance, snapshot.fields))
    return _secrets_masked(before, after) if after else None


def _secrets_masked(before: dict, after: dict) -> tuple[dict, dict]:
    """Secrets as "set"/"not set" states, and "set"/"changed"/"cleared" for a change."""
    before, after = dict(before), dict(after)
    for key in SECRET_FIELDS:
        old, new = before.get(key), after.get(key)
        if key in before:
            before[key] = "set" if old else "not set"
        if key in after and key in before:
            after[key] = "cleared" if not new else ("changed" if old else "set")
        elif key in after:
            after[key] = "set" if new else "not set"
    return before, after


# --- Tenants ------------------------------------------------------------------

TENANT_FIELDS = (
    "name",
    "timezone",
    "sync_interval",
    "source_kind",
    "source_url",
    "source_token",
    "webhook_url",
    "webhook_secret",
    "status",
)
_STATUS_ACTIONS = {"paused": Action.TENANT_PAUSED, "active": Action.TENANT_RESUMED}


def tenant_audit_snapshot(*, tenant: Tenant, update_fields: frozenset[str] | None) -> None:
    audit_snapshot_take(instance=tenant, fields=TENANT_FIELDS, update_fields=update_fields)


def tenant_audit_saved(*, tenant: Tenant, created: bool) -> None:
    """Record a tenant's creation, pause, resume or change of settings; nothing if none."""
    changes = _saved_changes(instance=tenant, fields=TENANT_FIELDS, created=created)
    if changes is None:
        return
    before, after = changes
    target, slug = f"tenant:{tenant.schema_name}", tenant.schema_name
    if created:
        audit_record(
            action=Action.TENANT_CREATED, target=target, before={}, after=after, tenant_slug=slug
        )
        return
    if "status" in after:
        # A pause or resume is its own event, apart from any settings saved with it.
        audit_record(
            action=_STATUS_ACTIONS.get(after["status"], Action.TENANT_SETTINGS_CHANGED),
            target=target,
            before={"status": before.pop("status")},
            after={"status": after.pop("status")},
            tenant_slug=slug,
        )
    if after:
        audit_record(
            action=Action.TENANT_SETTINGS_CHANGED,
            target=target,
            before=before,
            after=after,
            tenant_slug=slug,
        )


def tenant_audit_deleted(*, tenant: Tenant) -> None:
    before, _ = _secrets_masked(_instance_values(tenant, TENANT_FIELDS), {})
    audit_record(
        action=Action.TENANT_DELETED,
        target=f"tenant:{tenant.schema_name}",
        before=before,
        after={},
        tenant_slug=tenant.schema_name,
    )


# --- Users' digest settings (in the tenant's schema) ----------------------------

USER_SCHEDULE_FIELDS = ("frequency", "hour", "weekday", "timezone", "enabled", "send_when_empty")
_schedule_action: ContextVar[str] = ContextVar("audit_schedule_action", default="")


@contextmanager
def digest_change_recorded_as(action: str) -> Iterator[str]:
    """Record digest setting changes inside the block as `action` (an unsubscribe, say)
    instead of digest.changed."""
    token = _schedule_action.set(action)
    try:
        yield action
    finally:
        _schedule_action.reset(token)


def user_schedule_audit_snapshot(
    *, schedule: UserSchedule, update_fields: frozenset[str] | None
) -> None:
    # Only the rule the user sets; next_due_at and last_sent_at are the system's bookkeeping.
    audit_snapshot_take(instance=schedule, fields=USER_SCHEDULE_FIELDS, update_fields=update_fields)


def user_schedule_audit_saved(*, schedule: UserSchedule, created: bool) -> None:
    changes = _saved_changes(instance=schedule, fields=USER_SCHEDULE_FIELDS, created=created)
    if changes is not None:
        audit_record(
            action=_schedule_action.get() or Action.DIGEST_CHANGED,
            target=_schedule_target(schedule),
            before=changes[0],
            after=changes[1],
            tenant_slug=_current_tenant_slug(),
        )


def user_schedule_audit_deleted(*, schedule: UserSchedule) -> None:
    audit_record(
        action=Action.DIGEST_DELETED,
        target=_schedule_target(schedule),
        before=_instance_values(schedule, USER_SCHEDULE_FIELDS),
        after={},
        tenant_slug=_current_tenant_slug(),
    )


def _schedule_target(schedule: UserSchedule) -> str:
    try:
        return schedule.user.email
    except ObjectDoesNotExist:  # deleted along with its user, in an unusual order
        return f"user #{schedule.user_id}"


def _current_tenant_slug() -> str:
    schema = connection.schema_name
    return "" if schema == get_public_schema_name() else schema


# --- Tenant users' accounts (tenants.accounts.services calls these) -------------


def user_audit_record(
    *,
    action: str,
    user: Any,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> None:
    """Record a change to a user of the tenant the connection is on; the target is their email.

    Never pass a password or its hash: a password change is recorded without values.
    """
    audit_record(
        action=action,
        target=user.email,
        before={key: json_safe(value) for key, value in (before or {}).items()},
        after={key: json_safe(value) for key, value in (after or {}).items()},
        tenant_slug=_current_tenant_slug(),
        actor=actor,
    )


# --- Periodic tasks, as operators edit them in the admin ------------------------
# Not through PeriodicTask's model signals: beat saves its rows on every sync, and
# a query per save would slow beat and bury the trail in the system's own writes.

PERIODIC_TASK_FIELDS = (
    "name",
    "task",
    "enabled",
    "description",
    "start_time",
    "expires",
    "expire_seconds",
    "one_off",
    "args",
    "kwargs",
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "headers",
)


@dataclass(frozen=True)
class TaskSnapshot:
    name: str
    tenant_slug: str
    values: dict[str, Any]


def periodic_task_values(task: PeriodicTask) -> dict[str, Any]:
    """The operator-editable settings of a task; run bookkeeping is left out."""
    values = _instance_values(task, PERIODIC_TASK_FIELDS)
    values["interval"] = json_safe(interval_delta(task.interval)) if task.interval else None
    for name in SCHEDULE_FIELDS[1:]:
        related = getattr(task, name)
        values[name] = str(related) if related else None
    return values


def periodic_task_snapshots(*, task_ids: Iterable[int]) -> dict[int, TaskSnapshot]:
    """The tasks' settings as stored now, with the tenant each belongs to."""
    tasks = list(
        PeriodicTask.objects.filter(pk__in=list(task_ids)).select_related(
            *SCHEDULE_FIELDS, "tenant_link__tenant"
        )
    )
    slugs = _task_tenant_slugs(tasks)
    return {
        task.pk: TaskSnapshot(
            name=task.name, tenant_slug=slugs.get(task.pk, ""), values=periodic_task_values(task)
        )
        for task in tasks
    }


def _task_tenant_slugs(tasks: list[PeriodicTask]) -> dict[int, str]:
    """Each task's tenant: its link, else its `_schema_name` header if that names a tenant."""
    slugs = {t.pk: t.tenant_link.tenant.schema_name for t in tasks if hasattr(t, "tenant_link")}
    claimed = {t.pk: header_schema(t) or "" for t in tasks if t.pk not in slugs}
    # A header is only a claim (anyone may type one in the admin): believe it for a real tenant.
    known = set(
        Tenant.objects.filter(schema_name__in=set(claimed.values())).values_list(
            "schema_name", flat=True
        )
    )
    return slugs | {pk: slug for pk, slug in claimed.items() if slug in known}


def periodic_tasks_audit_saved(
    *, before: Mapping[int, TaskSnapshot], task_ids: Iterable[int]
) -> int:
    """Record what changed in each task since `before` (a task missing there was created).

    Returns the number of events recorded.
    """
    recorded = 0
    for pk, now in periodic_task_snapshots(task_ids=task_ids).items():
        old = before.get(pk)
        if old is None:
            action, changes = Action.PERIODIC_TASK_CREATED, ({}, now.values)
        else:
            action, changes = Action.PERIODIC_TASK_CHANGED, changes_between(old.values, now.values)
        if changes[1] or changes[0]:
            audit_record(
                action=action,
                target=now.name,
                before=changes[0],
                after=changes[1],
                tenant_slug=now.tenant_slug or (old.tenant_slug if old else ""),
            )
            recorded += 1
    return recorded


def periodic_tasks_audit_deleted(*, before: Mapping[int, TaskSnapshot]) -> None:
    for snapshot in before.values():
        audit_record(
            action=Action.PERIODIC_TASK_DELETED,
            target=snapshot.name,
            before=snapshot.values,
            after={},
            tenant_slug=snapshot.tenant_slug,
        )


def periodic_tasks_audit_run(*, before: Mapping[int, TaskSnapshot]) -> None:
    for snapshot in before.values():
        audit_record(
            action=Action.PERIODIC_TASK_RUN,
            target=snapshot.name,
            before={},
            after={},
            tenant_slug=snapshot.tenant_slug,
        )
