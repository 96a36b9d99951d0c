"""Sync pages of a tenant's site: dashboard, sync settings, pause/resume/run now, run history,
and the schedule history (what the scheduler did with each slot).

Every page works as plain forms and redirects; htmx only swaps in fresh
partials (the `_*.html` templates) when it asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST, require_safe

from scheduling.forms import (
    OccurrenceFilterForm,
    RunFilterForm,
    SchedulePauseForm,
    SyncNoteForm,
    SyncSettingsForm,
)
from scheduling.platform.models import Occurrence
from scheduling.platform.policies import (
    OccurrencePage,
    schedule_pause,
    schedule_resume,
    tenant_occurrence_page,
    tenant_sync_schedule,
    tenant_sync_task,
)
from scheduling.selectors import sync_next_run, sync_overview, sync_run_list
from scheduling.templatetags.local_times import moment_display
from tenants.accounts.decorators import tenant_admin_required
from tenants.models import Tenant
from tenants.services import (
    tenant_pause,
    tenant_resume,
    tenant_settings_update,
    tenant_sync_run_now,
)

RUNS_PER_PAGE = 25
OCCURRENCES_PER_PAGE = 50
SYNC_TASK_MISSING = "The sync task is missing; an operator restores it by reconciling schedules."


def _page(request: HttpRequest, *, full: str, partial: str, context: dict) -> HttpResponse:
    """The whole page, or only its partial when htmx refreshes it (not on a history restore)."""
    wants_partial = request.htmx and not request.htmx.history_restore_request
    response = render(request, partial if wants_partial else full, context)
    patch_vary_headers(response, ["HX-Request"])  # a cache must not mix the two
    return response


def _next_sync_text(tenant: Tenant) -> str:
    if not tenant.is_active:
        return "paused"
    next_run = sync_next_run(tenant=tenant, now=timezone.now())
    return moment_display(next_run, tenant.timezone) if next_run else "not scheduled"


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        "tenant": request.tenant,
        "overview": sync_overview(tenant=request.tenant, now=timezone.now()),
        "note_form": SyncNoteForm(),
    }
    return _page(
        request,
        full="scheduling/dashboard.html",
        partial="scheduling/_sync_status.html",
        context=context,
    )


@tenant_admin_required
def sync_settings(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    data = request.POST if request.method == "POST" else None
    form = SyncSettingsForm(data, initial=SyncSettingsForm.initial_for(tenant))
    if form.is_valid():
        try:
            tenant_settings_update(tenant=tenant, **form.service_kwargs())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Saved. Next sync: {_next_sync_text(tenant)}")
            return redirect("sync_settings")
    return _settings_page(request, form=form, pause_form=SchedulePauseForm())


def _settings_page(
    request: HttpRequest, *, form: SyncSettingsForm, pause_form: SchedulePauseForm
) -> HttpResponse:
    sync = tenant_sync_schedule(tenant=request.tenant, now=timezone.now())
    context = {
        "tenant": request.tenant,
        "form": form,
        "pause_form": pause_form,
        "sync_pause": sync.pause,
        "next_run_at": sync.next_run_at,
    }
    return render(request, "scheduling/settings.html", context)


@tenant_admin_required
@require_POST
def sync_schedule_pause(request: HttpRequest) -> HttpResponse:
    """Pause the sync schedule with a note; the tenant stays active (Run now still works)."""
    task = tenant_sync_task(tenant=request.tenant)
    form = SchedulePauseForm(request.POST)
    if task is None:
        messages.error(request, f"Not paused: {SYNC_TASK_MISSING}")
    elif not form.is_valid():
        initial = SyncSettingsForm.initial_for(request.tenant)
        return _settings_page(request, form=SyncSettingsForm(initial=initial), pause_form=form)
    else:
        try:
            paused = schedule_pause(task, note=form.cleaned_data["note"])
        except ValidationError:  # deleted since it was read: reconcile puts it back
            messages.error(request, f"Not paused: {SYNC_TASK_MISSING}")
        else:
            if paused:
                messages.success(
                    request, "Sync schedule paused. No scheduled sync runs until you resume it."
                )
            else:
                messages.info(request, "The sync schedule was paused already.")
    return redirect("sync_settings")


@tenant_admin_required
@require_POST
def sync_schedule_resume(request: HttpRequest) -> HttpResponse:
    task = tenant_sync_task(tenant=request.tenant)
    try:
        resumed = task is not None and schedule_resume(task)
    except ValidationError:  # deleted since it was read
        task = None
    if task is None:
        messages.error(request, f"Not resumed: {SYNC_TASK_MISSING}")
    elif resumed:
        messages.success(
            request, f"Sync schedule resumed. Next sync: {_next_sync_text(request.tenant)}"
        )
    else:
        messages.info(request, "The sync schedule was not paused.")
    return redirect("sync_settings")


def _status_change(
    request: HttpRequest, *, service: Callable[..., bool], done: str, unchanged: str
) -> HttpResponse:
    form = SyncNoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing changed: {' '.join(form.errors['note'])}")
    elif service(tenant=request.tenant, note=form.cleaned_data["note"]):
        messages.success(request, done)
    else:
        messages.info(request, unchanged)
    return redirect("home")


@tenant_admin_required
@require_POST
def sync_pause(request: HttpRequest) -> HttpResponse:
    return _status_change(
        request,
        service=tenant_pause,
        done="Sync paused. No sync runs until you resume it.",
        unchanged="Sync was already paused.",
    )


@tenant_admin_required
@require_POST
def sync_resume(request: HttpRequest) -> HttpResponse:
    return _status_change(
        request,
        service=tenant_resume,
        done="Sync resumed.",
        unchanged="Sync was already running.",
    )


@tenant_admin_required
@require_POST
def sync_run_now(request: HttpRequest) -> HttpResponse:
    try:
        tenant_sync_run_now(tenant=request.tenant)
    except ValidationError as exc:
        messages.error(request, f"Not queued: {' '.join(exc.messages)}")
    else:
        messages.success(request, "Sync queued. It will appear in the run history in a moment.")
    return redirect("home")


@login_required
def run_history(request: HttpRequest) -> HttpResponse:
    filters = RunFilterForm(request.GET)
    status = filters.chosen_status
    runs = Paginator(sync_run_list(status=status), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"tenant": request.tenant, "filters": filters, "status": status, "runs": runs}
    return _page(
        request, full="scheduling/runs.html", partial="scheduling/_runs_table.html", context=context
    )


# The site's badge colours for each outcome of an occurrence.
OUTCOME_BADGES = {
    Occurrence.Status.SENT: "sent",
    Occurrence.Status.BUFFERED: "queued",
    Occurrence.Status.SKIPPED: "paused",
    Occurrence.Status.MISSED: "bad",
    Occurrence.Status.STARTED: "running",
    Occurrence.Status.FINISHED: "ok",
    Occurrence.Status.FAILED: "failed",
}


@dataclass(frozen=True)
class HistoryRow:
    occurrence: Occurrence
    job: str
    outcome: str
    badge: str

    @property
    def duration(self) -> timedelta | None:
        started, finished = self.occurrence.started_at, self.occurrence.finished_at
        return finished - started if started and finished else None


def _history_rows(page: OccurrencePage, now: datetime) -> list[HistoryRow]:
    return [
        HistoryRow(
            occurrence=occurrence,
            job=page.jobs.get(occurrence.periodic_task_id, occurrence.name),
            outcome=occurrence.outcome(now),
            badge="bad" if occurrence.expired(now) else OUTCOME_BADGES.get(occurrence.status, ""),
        )
        for occurrence in page.occurrences
    ]


@tenant_admin_required
@require_safe
def schedule_history(request: HttpRequest) -> HttpResponse:
    """Every slot of the tenant's own schedules and its outcome, newest first."""
    filters = OccurrenceFilterForm(request.GET)
    status, number = filters.chosen()
    page = tenant_occurrence_page(
        tenant=request.tenant, number=number, per_page=OCCURRENCES_PER_PAGE, status=status
    )
    context = {
        "tenant": request.tenant,
        "filters": filters,
        "status": status,
        "page": page,
        "rows": _history_rows(page, timezone.now()),
    }
    return _page(
        request,
        full="scheduling/schedule_history.html",
        partial="scheduling/_schedule_history_table.html",
        context=context,
    )
