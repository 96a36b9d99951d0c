"""Audit events, stored in the public schema (every event) and in each tenant's schema
(that tenant's events)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import models
from django.utils import timezone


class ActorKind(models.TextChoices):
    USER = "user", "Tenant user"
    OPERATOR = "operator", "Operator"
    SYSTEM = "system", "System"


class Action(models.TextChoices):
    TENANT_CREATED = "tenant.created", "Tenant created"
    TENANT_SETTINGS_CHANGED = "tenant.settings_changed", "Tenant settings changed"
    TENANT_PAUSED = "tenant.paused", "Tenant paused"
    TENANT_RESUMED = "tenant.resumed", "Tenant resumed"
    TENANT_DELETED = "tenant.deleted", "Tenant deleted"
    DIGEST_CHANGED = "digest.changed", "Digest settings changed"
    DIGEST_DELETED = "digest.deleted", "Digest settings deleted"
    DIGEST_UNSUBSCRIBED = "digest.unsubscribed", "Unsubscribed from digests by email link"
    WEBHOOK_SECRET_ROTATED = "webhook.secret_rotated", "Webhook secret rotated"
    PERIODIC_TASK_CREATED = "periodic_task.created", "Periodic task created"
    PERIODIC_TASK_CHANGED = "periodic_task.changed", "Periodic task changed"
    PERIODIC_TASK_DELETED = "periodic_task.deleted", "Periodic task deleted"
    PERIODIC_TASK_RUN = "periodic_task.run", "Periodic task run now"
    USER_CREATED = "user.created", "User created"
    USER_INVITED = "user.invited", "User invited"
    USER_INVITE_ACCEPTED = "user.invite_accepted", "Invitation accepted"
    USER_CHANGED = "user.changed", "User changed"
    USER_DEACTIVATED = "user.deactivated", "User deactivated"
    USER_REACTIVATED = "user.reactivated", "User reactivated"
    USER_PASSWORD_CHANGED = "user.password_changed", "Password changed"


class AuditEvent(models.Model):
    """One recorded change: who, when, what, and the changed fields before and after.

    `before` and `after` hold only the fields that changed, as JSON values
    (durations in seconds, datetimes in ISO 8601); secrets appear only as
    "set", "not set", "changed" or "cleared".
    """

    ActorKind = ActorKind
    Action = Action

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    occurred_at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=16, choices=ActorKind)
    # The email of a user or operator, or "system" with what ran ("system: reconcile_schedules").
    actor_label = models.CharField(max_length=254)
    # The user's public_id; a label alone would be ambiguous, as emails repeat across tenants.
    actor_id = models.UUIDField(null=True, blank=True)
    tenant_slug = models.CharField(max_length=40, blank=True, help_text="Blank: platform-wide.")
    action = models.CharField(max_length=40, choices=Action)
    target = models.CharField(max_length=255, help_text="A task name, tenant or user email.")
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    # Why, in the actor's words: the optional note given with a pause or resume.
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["-occurred_at"], name="auditevent_occurred"),
            # A tenant's history, newest first: the tenant site and the operator's filter.
            models.Index(fields=["tenant_slug", "-occurred_at"], name="auditevent_tenant_occurred"),
        ]
        constraints = [
            models.CheckConstraint(
                name="auditevent_actor_kind_valid",
                condition=models.Q(actor_kind__in=[kind.value for kind in ActorKind]),
            ),
            models.CheckConstraint(
                name="auditevent_action_valid",
                condition=models.Q(action__in=[action.value for action in Action]),
            ),
            models.CheckConstraint(
                name="auditevent_user_actor_has_id",
                condition=models.Q(actor_kind="system") | models.Q(actor_id__isnull=False),
                violation_error_message="A user or operator actor needs an id.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target} by {self.actor_label}"

    def change_lines(self) -> list[str]:
        """One "field: before → after" line per changed field, in the order recorded."""
        keys = list(dict.fromkeys([*self.before, *self.after]))
        return [
            f"{key}: {_shown(self.before.get(key, _MISSING))} → "
            f"{_shown(self.after.get(key, _MISSING))}"
            for key in keys
        ]


_MISSING = object()


def _shown(value: Any) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, sort_keys=True)
