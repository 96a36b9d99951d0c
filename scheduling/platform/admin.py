"""The operators' list of periodic tasks (whose each is, what kind, when it next runs,
its scheduler policies, pause with a note), the run overview (which tenants' syncs
failed lately), and the occurrence history of the project's scheduler."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Max, Min, Q
from django.template.defaultfilters import truncatechars
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_celery_beat.models import PeriodicTask

from notifications.platform.admin import AtLeast
from scheduling.audit.admin import AuditedPeriodicTaskAdmin, CheckedPeriodicTaskForm
from scheduling.jobs import JOBS
from scheduling.platform.models import Occurrence, ScheduleState, SyncFailure, TenantTask
from scheduling.platform.policies import (
    PAUSE_NOTE_MAX,
    POLICY_FIELDS,
    pause_note_clean,
    policy_clean,
    schedule_pause,
    schedule_policy_set,
    schedule_resume,
)
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


class SchedulePolicyForm(forms.ModelForm):
    """The policy fields of a task's ScheduleState, checked as the service checks them."""

    class Meta:
        model = ScheduleState
        fields = POLICY_FIELDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance._state.adding:
            # What the scheduler gives a new row, so an untouched form counts as unchanged.
            self.initial["catchup_window"] = settings.SCHEDULER_CATCHUP_WINDOW

    def clean(self):
        data = super().clean()
        try:
            policy_clean({name: data[name] for name in POLICY_FIELDS if name in data})
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                self.add_error(name, errors)
        return data


class ScheduleStateInline(admin.StackedInline):
    """The task's policies, editable; what the scheduler owes it, read-only.

    Saved by PlatformPeriodicTaskAdmin.save_formset through schedule_policy_set, never
    by the form: saving the row whole would write back the due fields as they were
    when the page was loaded, over what the scheduler wrote since.
    """

    model = ScheduleState
    form = SchedulePolicyForm
    fk_name = "periodic_task"
    can_delete = False
    max_num = 1
    verbose_name = verbose_name_plural = "scheduler policy and state"
    readonly_fields = (
        "paused",
        "first_seen_at",
        "active",
        "next_slot_at",
        "due_at",
        "last_slot_at",
        "history",
    )
    fields = (*POLICY_FIELDS, *readonly_fields)

    @admin.display(description="paused")
    def paused(self, state: ScheduleState) -> str:
        if state.paused_at is None or state.periodic_task.enabled:
            return "no"
        return f"since {state.paused_at:%Y-%m-%d %H:%M:%S %Z}: {state.pause_note}"

    @admin.display(description="occurrences")
    def history(self, state: ScheduleState) -> str:
        if state.pk is None:
            return "-"
        return format_html('<a href="{}">Occurrence history</a>', _occurrences_url(state.pk))


def _occurrences_url(task_id: int) -> str:
    return f"{reverse('admin:scheduling_platform_occurrence_changelist')}?task={task_id}"


class PauseForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=PAUSE_NOTE_MAX,
        help_text="Why: kept with the pause, shown to the tenant for its own tasks, and "
        "recorded in the audit trail.",
    )

    def clean_note(self) -> str:
        try:
            return pause_note_clean(self.cleaned_data["note"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["note"]) from None


PAUSE_ACTION_MAX = 1000  # tasks per pause or resume: each is its own transaction


class PlatformPeriodicTaskAdmin(AuditedPeriodicTaskAdmin):
    form = TenantSafePeriodicTaskForm
    inlines = (ScheduleStateInline,)
    change_form_template = "admin/django_celery_beat/periodictask/change_form.html"
    pause_template = "admin/django_celery_beat/periodictask/pause_tasks.html"
    list_display = (
        "name",
        "tenant",
        "kind",
        "enabled",
        "pause",
        "schedule",
        "last_run_at",
        "total_run_count",
        "next_run",
    )
    list_filter = (TenantFilter, *AuditedPeriodicTaskAdmin.list_filter)
    actions = (*AuditedPeriodicTaskAdmin.actions, "pause_tasks", "resume_tasks")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant_link__tenant", "dispatch_state")

    def save_formset(self, request, form, formset, change):
        if formset.model is not ScheduleState:
            return super().save_formset(request, form, formset, change)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for policy_form in formset.forms:
            if not policy_form.has_changed():
                continue
            values = {name: policy_form.cleaned_data[name] for name in POLICY_FIELDS}
            state = schedule_policy_set(form.instance, **values)
            formset.changed_objects.append((state, policy_form.changed_data))
        return None

    @admin.display(description="paused")
    def pause(self, task: PeriodicTask) -> str:
        state = getattr(task, "dispatch_state", None)  # a missing row is an AttributeError
        if task.enabled or state is None or state.paused_at is None:
            return ""
        return truncatechars(state.pause_note, 60)

    @admin.action(description="Pause selected tasks, with a note")
    def pause_tasks(self, request, queryset):
        tasks = self._action_tasks(request, queryset)
        if tasks is None:
            return None
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Pause periodic tasks",
                "opts": self.opts,
                "form": form,
                "tasks": tasks,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, self.pause_template, context)
        note = form.cleaned_data["note"]
        paused, selected = self._each(request, tasks, lambda task: schedule_pause(task, note=note))
        self._report(request, paused, selected, done="paused", already="paused already")
        return None

    @admin.action(description="Resume selected tasks (lift their pause)")
    def resume_tasks(self, request, queryset):
        tasks = self._action_tasks(request, queryset)
        if tasks is not None:
            resumed, selected = self._each(request, tasks, schedule_resume)
            self._report(request, resumed, selected, done="resumed", already="not paused")

    def _action_tasks(self, request, queryset) -> list[PeriodicTask] | None:
        tasks = list(queryset.order_by("name")[: PAUSE_ACTION_MAX + 1])
        if len(tasks) > PAUSE_ACTION_MAX:
            self.message_user(
                request,
                f"Select at most {PAUSE_ACTION_MAX} tasks at a time; nothing was changed.",
                messages.ERROR,
            )
            return None
        return tasks

    def _each(self, request, tasks: list[PeriodicTask], change) -> tuple[int, int]:
        """Apply `change` to each task; (how many it changed, how many still existed). A
        task deleted since the list was shown is reported, and the others are changed."""
        changed = existing = 0
        for task in tasks:
            try:
                changed += bool(change(task))
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.WARNING)
                continue
            existing += 1
        return changed, existing

    def _report(self, request, changed: int, selected: int, *, done: str, already: str) -> None:
        if changed:
            self.message_user(request, f"{changed} task(s) {done}.", messages.SUCCESS)
        if selected > changed:
            self.message_user(request, f"{selected - changed} task(s) {already}.", messages.INFO)

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


# --- Occurrence history -------------------------------------------------------------
# Millions of rows: every query of the list must follow an index. The list is read
# newest recorded first along occurrence_recorded, the only index over all of it; so
# are the date drill-down and its choices. A task's own list (?task=) also follows
# the (task, slot) unique index.

OCCURRENCE_DATES = "recorded_at"
PAGES_MAX = 1000  # deeper than this, the date drill-down is the way on
TASKS_LISTED_MAX = 500  # a filter or search naming more tasks reads them as a subquery
ERROR_CHARS = 80


class LookaheadPaginator(Paginator):
    """Counts rows only up to one page past the page shown, never all of them.

    A count reads every row it counts, and a filter on a rare status (no index) reads
    the table until it has counted enough: counting just past the page shown costs
    about what reading the page does. The count reads as "N+" and the pages beyond
    are reached one by one; pages past PAGES_MAX are refused.
    """

    def __init__(self, object_list, per_page, *, page_shown: int = 1, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.cap = (min(max(page_shown, 1), PAGES_MAX) + 1) * per_page

    @cached_property
    def count(self) -> int:
        # Unordered: any rows will do for a count, and PostgreSQL need not follow the index.
        counted = self.object_list.order_by()[: self.cap + 1].count()
        return AtLeast(self.cap) if counted > self.cap else counted


class OccurrenceStatusFilter(admin.SimpleListFilter):
    title = parameter_name = "status"

    def lookups(self, request, model_admin):
        return Occurrence.outcome_choices()

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value not in dict(Occurrence.outcome_choices()):
            return queryset.none()
        return queryset.filter(Occurrence.outcome_filter(value, timezone.now()))


class OccurrenceKindFilter(admin.SimpleListFilter):
    """The kind of job: the registered job its periodic task runs (as it is now)."""

    title = parameter_name = "kind"

    def lookups(self, request, model_admin):
        return sorted((job.kind, job.kind) for job in JOBS.values())

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        names = [job.task_name for job in JOBS.values() if job.kind == value]
        if not names:
            return queryset.none()
        return _of_tasks(queryset, PeriodicTask.objects.filter(task__in=names))


def _of_tasks(occurrences, tasks):
    """The occurrences of `tasks`. A few are passed as a list of ids, which lets
    PostgreSQL read just their rows along the (task, slot) index; many, as a subquery,
    found while reading the newest rows first."""
    ids = list(tasks.values_list("pk", flat=True)[: TASKS_LISTED_MAX + 1])
    if len(ids) > TASKS_LISTED_MAX:
        return occurrences.filter(periodic_task_id__in=tasks.values("pk"))
    return occurrences.filter(periodic_task_id__in=ids)


class OccurrenceTaskFilter(admin.SimpleListFilter):
    """One task's occurrences (`?task=<id>`, linked from its change page). It lists only
    the chosen task, never every task: there may be a million."""

    title = "periodic task"
    parameter_name = "task"

    def lookups(self, request, model_admin):
        task_id = self._task_id()
        if task_id is None:
            return [] if self.value() is None else [(self.value(), "no such task")]
        name = PeriodicTask.objects.filter(pk=task_id).values_list("name", flat=True).first()
        return [(self.value(), name or f"deleted task {task_id}")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        task_id = self._task_id()
        return queryset.none() if task_id is None else queryset.filter(periodic_task_id=task_id)

    def _task_id(self) -> int | None:
        value = self.value()
        if value is None or not value.isdigit() or len(value) > 18:
            return None
        return int(value)


DATE_UNITS = ("year", "month", "day")


@dataclass(frozen=True)
class DateSpan:
    """The days from the first to the last row, in the admin's time zone."""

    first: datetime
    last: datetime

    def start(self) -> tuple[int | None, ...]:
        """Where the drill-down starts, as Django's does: below a single year or month."""
        if self.first.year != self.last.year:
            return (None, None, None)
        if self.first.month != self.last.month:
            return (self.first.year, None, None)
        return (self.first.year, self.first.month, None)

    def within(self, *parts: int) -> bool:
        size = len(parts)
        low = (self.first.year, self.first.month, self.first.day)[:size]
        high = (self.last.year, self.last.month, self.last.day)[:size]
        return low <= parts <= high

    def steps(self, year, month, day, *, link) -> tuple[dict | None, list[dict]]:
        """(the step back, the steps offered) below the chosen year, month and day."""
        if year and month and day:
            return _step(link(year, month), f"{year}-{month:02d}"), [
                _step(None, f"{year}-{month:02d}-{day:02d}")
            ]
        if year and month:
            days = range(1, calendar.monthrange(year, month)[1] + 1)
            return _step(link(year), str(year)), [
                _step(link(year, month, d), f"{year}-{month:02d}-{d:02d}")
                for d in days
                if self.within(year, month, d)
            ]
        if year:
            months = [m for m in range(1, 13) if self.within(year, m)]
            return _step(link(), "All dates"), [
                _step(link(year, m), f"{year}-{m:02d}") for m in months
            ]
        years = range(self.first.year, self.last.year + 1)
        return None, [_step(link(y), str(y)) for y in years]


def _step(link: str | None, title: str) -> dict:
    return {"link": link, "title": title}  # as admin/date_hierarchy.html reads it


class OccurrenceChangeList(ChangeList):
    """Django's date drill-down reads the distinct years, months or days of the rows
    listed: at millions of rows, the whole table. Here the steps offered are the
    calendar steps between the first and the last row ever recorded, two probes of
    the index, so a step may list nothing."""

    @cached_property
    def date_steps(self) -> dict:
        field = self.date_hierarchy
        bounds = self.root_queryset.aggregate(first=Min(field), last=Max(field))
        if bounds["first"] is None:
            return {"show": False}
        span = DateSpan(timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"]))
        # The values were checked as a date by the ChangeList before this runs.
        chosen = tuple(
            int(value) if value else None
            for value in (self.params.get(f"{field}__{unit}") for unit in DATE_UNITS)
        )
        back, choices = span.steps(*(chosen if any(chosen) else span.start()), link=self._link)
        return {"show": True, "back": back, "choices": choices}

    def _link(self, *parts: int) -> str:
        field = self.date_hierarchy
        units = DATE_UNITS[: len(parts)]
        chosen = {f"{field}__{unit}": part for unit, part in zip(units, parts, strict=True)}
        return self.get_query_string(chosen, [f"{field}__"])


@admin.register(Occurrence)
class OccurrenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only. Its list is the operators' history of the project's scheduler: every
    slot of every schedule and what became of it, newest recorded first."""

    list_display = (
        "name",
        "tenant",
        "slot_at",
        "due_at",
        "outcome",
        "slots",
        "started_at",
        "finished_at",
        "error_short",
        "recorded_at",
    )
    list_filter = (OccurrenceStatusFilter, OccurrenceKindFilter, OccurrenceTaskFilter)
    date_hierarchy = OCCURRENCE_DATES
    change_list_template = "admin/scheduling_platform/occurrence/change_list.html"
    ordering = ("-recorded_at", "-id")
    sortable_by = ()  # any other order would sort millions of rows for one page
    list_per_page = 100
    show_full_result_count = False
    actions = None
    search_fields = ("name",)  # shown as the search box; get_search_results searches
    search_help_text = (
        "A periodic task's name or its beginning, or a tenant's schema: "
        "the occurrences of the tasks that exist now."
    )

    def get_changelist(self, request, **kwargs):
        return OccurrenceChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        try:
            page_shown = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            page_shown = 1
        return LookaheadPaginator(queryset, per_page, page_shown=page_shown)

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # Only the filters' and the date drill-down's parameters: a hand-made lookup
        # could read the whole table (400). A month or day without its year would be
        # such a lookup too: the drill-down makes a range of them only below a year.
        year, *below = (f"{OCCURRENCE_DATES}__{unit}" for unit in DATE_UNITS)
        if lookup in below:
            return request is not None and year in request.GET
        return lookup in {spec.parameter_name for spec in self.list_filter} | {year}

    def get_search_results(self, request, queryset, search_term):
        """The occurrences of the tasks whose name is the term or starts with it, or whose
        tenant's schema is the term: found among the tasks first, then along the
        (task, slot) index. Occurrence.name has no index to search at this size."""
        term = search_term.strip()
        if not term:
            return queryset, False
        tasks = PeriodicTask.objects.filter(
            Q(name__startswith=term)
            | Q(tenant_link__tenant__schema_name=term)
            | _header_names(re.escape(term))
        )
        return _of_tasks(queryset, tasks), False

    @admin.display(description="status")
    def outcome(self, occurrence: Occurrence) -> str:
        return occurrence.outcome(timezone.now())

    @admin.display(description="tenant", empty_value="platform")
    def tenant(self, occurrence: Occurrence) -> str | None:
        return occurrence.schema_name or None

    @admin.display(description="error")
    def error_short(self, occurrence: Occurrence) -> str:
        if not occurrence.error:
            return ""
        return format_html(
            '<span title="{}">{}</span>',
            occurrence.error,
            truncatechars(occurrence.error, ERROR_CHARS),
        )
