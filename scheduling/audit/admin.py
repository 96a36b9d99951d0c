"""The audit trail in the operators' admin, and the admin edits of periodic tasks it records."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.admin import PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import PeriodicTask

from scheduling.audit import services
from scheduling.audit.models import AuditEvent
from scheduling.platform.policies import schedule_pauses_lift
from scheduling.platform.services import headers_parse, periodic_task_run_now
from scheduling.readonly_admin import ReadOnlyAdminMixin

SUMMARY_LENGTH = 120


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: an audit trail that can be edited is no audit trail."""

    list_display = (
        "occurred_at",
        "tenant_slug",
        "actor",
        "action",
        "target",
        "change",
        "note_shown",
    )
    list_filter = ("action", "actor_kind", "tenant_slug")
    search_fields = ("target", "actor_label")
    date_hierarchy = "occurred_at"
    list_per_page = 100
    fields = (
        "occurred_at",
        "action",
        "target",
        "tenant_slug",
        "actor_kind",
        "actor_label",
        "actor_id",
        "before",
        "after",
        "note",
        "public_id",
    )
    readonly_fields = fields

    @admin.display(description="actor", ordering="actor_label")
    def actor(self, event: AuditEvent) -> str:
        if event.actor_kind == AuditEvent.ActorKind.SYSTEM:
            return event.actor_label
        return f"{event.actor_label} ({event.get_actor_kind_display().lower()})"

    @admin.display(description="before → after")
    def change(self, event: AuditEvent) -> str:
        keys = list(dict.fromkeys([*event.before, *event.after]))
        text = "; ".join(
            f"{key}: {event.before.get(key, '(none)')} → {event.after.get(key, '(none)')}"
            for key in keys
        )
        return _shortened(text)

    @admin.display(description="note")
    def note_shown(self, event: AuditEvent) -> str:
        return _shortened(event.note)


def _shortened(text: str) -> str:
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 1] + "…"


class CheckedPeriodicTaskForm(PeriodicTaskForm):
    def clean_headers(self):
        # Beat loads every row's headers as a JSON object; one bad row would stop it loading.
        headers_parse(self.cleaned_data["headers"])
        return self.cleaned_data["headers"]


class AuditedPeriodicTaskAdmin(PeriodicTaskAdmin):
    """django-celery-beat's admin, with every operator edit, bulk action and run recorded.

    The library's actions use QuerySet.update(), which sends no signal, so each
    is wrapped: read the selected tasks, run the library's action unchanged
    (including its PeriodicTasks.update_changed()), then record what changed.
    Actions run outside the admin's transaction, hence the atomic blocks.
    A task enabled here, by its form or an action, has its pause note dropped
    (scheduling.platform.policies): it is not paused any more.
    Registered by scheduling.platform.admin, whose subclass adds the tenant columns.
    """

    form = CheckedPeriodicTaskForm

    def save_model(self, request, obj, form, change):
        before = services.periodic_task_snapshots(task_ids=[obj.pk]) if change else {}
        super().save_model(request, obj, form, change)
        services.periodic_tasks_audit_saved(before=before, task_ids=[obj.pk])
        schedule_pauses_lift(task_ids=[obj.pk])

    def delete_model(self, request, obj):
        before = services.periodic_task_snapshots(task_ids=[obj.pk])
        super().delete_model(request, obj)
        services.periodic_tasks_audit_deleted(before=before)

    def delete_queryset(self, request, queryset):
        before = services.periodic_task_snapshots(task_ids=_ids(queryset))
        super().delete_queryset(request, queryset)
        services.periodic_tasks_audit_deleted(before=before)

    def _changed_audited(self, action, request, queryset) -> None:
        with transaction.atomic():
            ids = _ids(queryset)
            before = services.periodic_task_snapshots(task_ids=ids)
            action(request, queryset)
            services.periodic_tasks_audit_saved(before=before, task_ids=ids)
            schedule_pauses_lift(task_ids=ids)

    @admin.action(description=PeriodicTaskAdmin.enable_tasks.short_description)
    def enable_tasks(self, request, queryset):
        self._changed_audited(super().enable_tasks, request, queryset)

    @admin.action(description=PeriodicTaskAdmin.disable_tasks.short_description)
    def disable_tasks(self, request, queryset):
        self._changed_audited(super().disable_tasks, request, queryset)

    @admin.action(description=PeriodicTaskAdmin.toggle_tasks.short_description)
    def toggle_tasks(self, request, queryset):
        self._changed_audited(super().toggle_tasks, request, queryset)

    @admin.action(description=PeriodicTaskAdmin.run_tasks.short_description)
    def run_tasks(self, request, queryset):
        # Not the library's action: it sends without the task's headers, so a tenant
        # task would carry the admin's public schema and be refused by the worker.
        ids = _ids(queryset)
        before = services.periodic_task_snapshots(task_ids=ids)
        sent, refused = {}, []
        for task in PeriodicTask.objects.filter(pk__in=ids).order_by("name"):
            try:
                periodic_task_run_now(task=task)
            except ValidationError as exc:
                refused.append(exc.messages[0])
            else:
                sent[task.pk] = before[task.pk]
        services.periodic_tasks_audit_run(before=sent)
        if sent:
            self.message_user(
                request, f"{len(sent)} task(s) sent to the workers.", messages.SUCCESS
            )
        for reason in refused:
            self.message_user(request, f"Not sent: {reason}", messages.ERROR)


def _ids(queryset) -> list[int]:
    # Read once up front: a filtered changelist (say enabled=No) no longer matches after the update.
    return list(queryset.values_list("pk", flat=True))
