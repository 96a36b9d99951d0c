"""The operators' list of periodic tasks (whose each is, what kind, when it next runs),
and the run overview: which tenants' syncs failed lately."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.functional import cached_property
from django_celery_beat.models import PeriodicTask

from scheduling.audit.admin import AuditedPeriodicTaskAdmin, CheckedPeriodicTaskForm
from scheduling.jobs import JOBS
from scheduling.platform.models import SyncFailure, TenantTask
from scheduling.platform.schedules import (
    schedule_describe,
    schedule_next_run,
    task_kind,
    task_tenant_slug,
)
from scheduling.platform.selectors import (
    sync_failure_counts,
    sync_failure_rows,
    sync_failure_totals,
    tenant_sync_failures,
)
from scheduling.platform.services import headers_parse
from scheduling.readonly_admin import ReadOnlyAdminMixin
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


# --- Run overview ---------------------------------------------------------------

OVERVIEW_HOURS = {1: "last hour", 24: "last 24 hours", 168: "last 7 days"}
DEFAULT_HOURS = 24
OVERVIEW_PER_PAGE = 50


class RunOverviewForm(forms.Form):
    """The overview's GET parameters; a bad one is reported and its default used instead."""

    hours = forms.TypedChoiceField(
        choices=list(OVERVIEW_HOURS.items()),
        coerce=int,
        required=False,
        empty_value=DEFAULT_HOURS,
        error_messages={
            "invalid_choice": "The period must be 1, 24 or 168 hours; "
            f"showing the last {DEFAULT_HOURS} hours."
        },
    )
    tenant = forms.UUIDField(
        required=False, error_messages={"invalid": "No such tenant; showing every tenant."}
    )

    def clean_tenant(self) -> Tenant | None:
        public_id = self.cleaned_data["tenant"]
        if public_id is None:
            return None
        tenant = Tenant.objects.filter(public_id=public_id).first()
        if tenant is None:
            raise forms.ValidationError("No such tenant; showing every tenant.")
        return tenant

    def choices(self) -> tuple[int, Tenant | None]:
        """(hours, tenant or None), each falling back to its default when it was refused."""
        self.is_valid()
        data = self.cleaned_data
        return data.get("hours", DEFAULT_HOURS), data.get("tenant")


class KnownCountPaginator(Paginator):
    """A Paginator told its count, read already with the totals, instead of counting again."""

    def __init__(self, object_list, per_page: int, *, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


@admin.register(SyncFailure)
class SyncFailureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only. Its list is the run overview: failing tenants, most failures first."""

    overview_template = "admin/scheduling_platform/syncfailure/run_overview.html"

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RunOverviewForm(request.GET)
        hours, tenant = form.choices()
        for error in dict.fromkeys(e for errors in form.errors.values() for e in errors):
            messages.warning(request, error)
        since = timezone.now() - timedelta(hours=hours)
        number = request.GET.get("page")
        if tenant is None:
            context = _overview_page(since=since, number=number)
        else:
            context = _tenant_failures_page(tenant=tenant, since=since, number=number)
        return TemplateResponse(
            request,
            self.overview_template,
            {
                **self.admin_site.each_context(request),
                **context,
                "opts": self.opts,
                "title": "Run overview",
                "hours": hours,
                "period": OVERVIEW_HOURS[hours],
                "hour_choices": OVERVIEW_HOURS,
                **(extra_context or {}),
            },
        )


def _overview_page(*, since: datetime, number: str | None) -> dict:
    totals = sync_failure_totals(since=since)
    counts = sync_failure_counts(since=since)
    page = KnownCountPaginator(counts, OVERVIEW_PER_PAGE, count=totals.tenants).get_page(number)
    rows = sync_failure_rows(counts=list(page), since=since) if totals.tenants else []
    return {"totals": totals, "page": page, "rows": rows}


def _tenant_failures_page(*, tenant: Tenant, since: datetime, number: str | None) -> dict:
    failures = tenant_sync_failures(tenant=tenant, since=since)
    return {"tenant": tenant, "page": Paginator(failures, OVERVIEW_PER_PAGE).get_page(number)}
