"""The tenant site's "My digest" page: each user's own digest settings, next and past digests.

A user only ever reaches their own schedule: it is looked up from request.user,
and nothing in the request names a user or a schedule.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from notifications.forms import DigestSettingsForm
from notifications.selectors import digest_deliveries_recent, digest_schedule_get, digest_zone
from scheduling.models import UserSchedule
from scheduling.recurrence import next_due_times
from scheduling.services import user_schedule_update
from scheduling.templatetags.local_times import local_time
from tenants.accounts.services import user_email_failing_clear

PREVIEW_COUNT = 3


@login_required
@require_http_methods(["GET", "POST"])
def my_digest(request):
    schedule = digest_schedule_get(user=request.user)
    data = request.POST if request.method == "POST" else None
    form = DigestSettingsForm(data, schedule=schedule, default_zone=request.tenant.timezone)
    if form.is_valid():
        try:
            schedule = user_schedule_update(user=request.user, **form.schedule_fields())
        except ValidationError as exc:  # the form checks the same rules; this is a backstop
            form.add_error(None, exc.messages)
        else:
            messages.success(request, _saved_message(schedule))
            return redirect("my_digest")
    context = {
        "form": form,
        "schedule": schedule,
        "zone": digest_zone(schedule=schedule, tenant=request.tenant),
        "deliveries": digest_deliveries_recent(user=request.user),
    }
    return render(request, "notifications/digest.html", context | _preview(form))


@login_required
@require_GET
def digest_preview(request):
    """The next digest times for the settings in the query string, as a page fragment."""
    form = DigestSettingsForm(request.GET, schedule=None, default_zone=request.tenant.timezone)
    context = {"form": form, "list_errors": True}
    return render(request, "notifications/_preview.html", context | _preview(form))


@login_required
@require_POST
def digest_email_retry(request):
    """The user says their mailbox works again: digests may go to it once more."""
    if user_email_failing_clear(user=request.user):
        messages.success(request, f"Digests will be sent to {request.user.email} again.")
    return redirect("my_digest")


def _preview(form: DigestSettingsForm) -> dict[str, Any]:
    rule = form.rule()
    if rule is None:
        return {"rule": None, "upcoming": []}
    upcoming = next_due_times(**rule, after=timezone.now(), count=PREVIEW_COUNT)
    return {"rule": rule, "upcoming": upcoming}


def _saved_message(schedule: UserSchedule) -> str:
    if schedule.next_due_at is None:
        return "Saved. Digests are off."
    return f"Saved. Your next digest: {local_time(schedule.next_due_at, schedule.zone)}."
