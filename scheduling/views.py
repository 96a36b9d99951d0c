"""Sync pages of a tenant's site: dashboard, sync settings, pause/resume/run now, run history.

Every page works as plain forms and redirects; htmx only swaps in fresh
partials (the `_*.html` templates) when it asks for them.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from scheduling.forms import RunFilterForm, SyncNoteForm, SyncSettingsForm
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
    context = {
        "tenant": tenant,
        "form": form,
        "next_run_at": sync_next_run(tenant=tenant, now=timezone.now()),
    }
    return render(request, "scheduling/settings.html", context)


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
