"""The operators' list of periodic tasks: whose each is, what kind, and when it next runs."""

from __future__ import annotations

import re

from django import forms
from django.contrib import admin
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling.audit.admin import AuditedPeriodicTaskAdmin, CheckedPeriodicTaskForm
from scheduling.jobs import JOBS
from scheduling.platform.models import TenantTask
from scheduling.platform.schedules import (
    schedule_describe,
    schedule_next_run,
    task_kind,
    task_tenant_slug,
)
from scheduling.platform.services import headers_parse
from tenants.models import Tenant

PLATFORM = "_platform"  # no tenant slug has an underscore


def _header_names(schema_pattern: str) -> Q:
    # An unlinked task's tenant comes from its header, as in task_tenant_slug.
    return Q(
        tenant_link__isnull=True,
        headers__regex=rf'"_schema_name"\s*:\s*"{schema_pattern}"',
    )


class TenantFilter(admin.SimpleListFilter):
    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        slugs = (
            Tenant.objects.filter(task_links__isnull=False)
            .values_list("schema_name", flat=True)
            .distinct()
            .order_by("schema_name")
        )
        return [*((slug, slug) for slug in slugs), (PLATFORM, "platform (no tenant)")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == PLATFORM:
            return queryset.filter(tenant_link__isnull=True).exclude(
                _header_names(r'(?!public")[^"]+')
            )
        slug = re.escape(value)
        return queryset.filter(Q(tenant_link__tenant__schema_name=value) | _header_names(slug))


class TenantSafePeriodicTaskForm(CheckedPeriodicTaskForm):
    """Only registered jobs; a tenant's own task stays that tenant's, and of its kind."""

    regtask = forms.ChoiceField(
        label="Task (registered)",
        required=False,
        choices=[("", "---------"), *((name, name) for name in sorted(JOBS))],
    )

    def clean(self):
        data = super().clean()
        source = "regtask" if data.get("regtask") else "task"
        job = JOBS.get(data.get("task") or "")
        if job is None:
            self.add_error(source, f"{data.get('task')!r} is not a registered job.")
        link = self._tenant_link()
        if link is None:
            return data
        slug = link.tenant.schema_name
        owner = f"This is {slug}'s {link.get_kind_display().lower()} task"
        if job is not None and (job.scope, job.kind) != ("tenant", link.kind):
            self.add_error(source, f"{owner}: its task must stay a {link.kind} job.")
        # Absent when clean_headers refused them; that error says enough.
        if "headers" in data and headers_parse(data["headers"]).get("_schema_name") != slug:
            self.add_error("headers", f"{owner}: its _schema_name header must stay {slug!r}.")
        return data

    def _tenant_link(self) -> TenantTask | None:
        if self.instance.pk is None:
            return None
        return (
            TenantTask.objects.select_related("tenant").filter(periodic_task=self.instance).first()
        )


class PlatformPeriodicTaskAdmin(AuditedPeriodicTaskAdmin):
    form = TenantSafePeriodicTaskForm
    list_display = (
        "name",
        "tenant",
        "kind",
        "enabled",
        "schedule",
        "last_run_at",
        "total_run_count",
        "next_run",
    )
    list_filter = (TenantFilter, *AuditedPeriodicTaskAdmin.list_filter)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant_link__tenant")

    @admin.display(description="tenant", empty_value="platform")
    def tenant(self, task: PeriodicTask) -> str | None:
        return task_tenant_slug(task=task)

    @admin.display(description="kind")
    def kind(self, task: PeriodicTask) -> str | None:
        return task_kind(task=task)

    @admin.display(description="schedule")
    def schedule(self, task: PeriodicTask) -> str:
        return schedule_describe(task=task)

    @admin.display(description="next run", empty_value="never")
    def next_run(self, task: PeriodicTask):
        return schedule_next_run(task=task, now=timezone.now())


if admin.site.is_registered(PeriodicTask):
    admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PlatformPeriodicTaskAdmin)
