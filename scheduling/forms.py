"""Forms of the sync pages: they check and convert; tenants.services saves."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.forms.utils import flatatt
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from scheduling.intervals import (
    IntervalSyntaxError,
    describe_duration,
    format_interval,
    parse_interval,
)
from scheduling.models import SyncRun
from scheduling.platform.models import Occurrence
from scheduling.platform.policies import PAUSE_NOTE_MAX, pause_note_clean
from tenants.models import Tenant
from tenants.validators import SyncIntervalValidator, TimezoneValidator, iana_time_zones

# "15 minutes", "1 hour and 30 mins", "every 2 days": unit words become parse_interval's letters.
_UNIT_WORD = re.compile(
    r"(\d+)\s*(w(?:ee)?ks?|days?|h(?:ou)?rs?|min(?:ute)?s?|sec(?:ond)?s?)\b", re.IGNORECASE
)
_FILLER = re.compile(r"^\s*every\s+|,|\band\b", re.IGNORECASE)


def interval_from_words(text: str) -> timedelta:
    """parse_interval, also reading unit words as people write them and as the site shows them."""
    compact = _UNIT_WORD.sub(lambda match: match[1] + match[2][0].lower(), _FILLER.sub(" ", text))
    return parse_interval(compact)


@cache
def _time_zone_options() -> tuple[tuple[str, str], ...]:
    """Each IANA name with its escaped <option>, sorted."""
    return tuple(
        (name, f'<option value="{escape(name)}">{escape(name)}</option>')
        for name in sorted(iana_time_zones())
    )


class TimeZoneSelect(forms.Widget):
    """A <select> of every IANA time zone name, built in one pass.

    Select renders a template per option: for ~600 names that was most of the page's time.
    """

    def render(self, name, value, attrs=None, renderer=None) -> str:
        chosen = "" if value is None else str(value)
        options = "".join(
            option.replace("<option ", "<option selected ", 1) if zone == chosen else option
            for zone, option in _time_zone_options()
        )
        attrs = self.build_attrs(self.attrs, attrs)
        # The name first, as Django's Select writes it.
        return format_html(
            '<select name="{}"{}>{}</select>', name, flatatt(attrs), mark_safe(options)
        )


class _Form(forms.Form):
    """Labels read exactly as written, without a trailing colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class SyncSettingsForm(_Form):
    """The tenant's sync source, interval and time zone. The token is write-only."""

    source_kind = forms.ChoiceField(label="Source kind", choices=Tenant.SourceKind.choices)
    source_url = forms.URLField(
        label="Source URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Where a JSON-over-HTTP source is fetched from; an http or https address.",
    )
    source_token = forms.CharField(
        label="Source token",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to keep the stored token.",
    )
    clear_source_token = forms.BooleanField(label="Clear the stored token", required=False)
    sync_interval = forms.CharField(label="Sync interval", max_length=100)
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        widget=TimeZoneSelect,
        help_text="Times on this site are shown in this zone.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = settings.TENANT_SYNC_INTERVAL_MIN, settings.TENANT_SYNC_INTERVAL_MAX
        self.fields["sync_interval"].help_text = (
            f"Such as 15 minutes, 1 hour or 90s; from {describe_duration(low)} "
            f"to {describe_duration(high)}."
        )

    @staticmethod
    def initial_for(tenant: Tenant) -> dict[str, Any]:
        return {
            "source_kind": tenant.source_kind,
            "source_url": tenant.source_url,
            "sync_interval": format_interval(tenant.sync_interval),
            "timezone": tenant.timezone,
        }

    def clean_sync_interval(self) -> timedelta:
        try:
            interval = interval_from_words(self.cleaned_data["sync_interval"])
        except IntervalSyntaxError as exc:
            raise ValidationError(str(exc), code="interval_syntax") from None
        SyncIntervalValidator()(interval)
        return interval

    def clean_timezone(self) -> ZoneInfo:
        name = self.cleaned_data["timezone"]
        TimezoneValidator()(name)
        return ZoneInfo(name)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("source_token") and data.get("clear_source_token"):
            self.add_error(
                "clear_source_token", "Either enter a new token or clear the stored one, not both."
            )
        needs_url = data.get("source_kind") == Tenant.SourceKind.HTTP_JSON
        if needs_url and not data.get("source_url") and "source_url" not in self.errors:
            self.add_error("source_url", "A JSON-over-HTTP source needs a URL.")
        return data

    def service_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        token = "" if data["clear_source_token"] else (data["source_token"] or None)
        return {
            "source_kind": data["source_kind"],
            "source_url": data["source_url"],
            "source_token": token,
            "sync_interval": data["sync_interval"],
            "timezone": data["timezone"],
        }

    def add_service_errors(self, error: ValidationError) -> None:
        """The service's errors beside their fields; the rest above the form."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for key, errors in error.error_dict.items():
            self.add_error(key if key in self.fields else None, errors)


class SyncNoteForm(_Form):
    """Why the sync is paused or resumed; it goes into the audit log."""

    note = forms.CharField(
        label="Note (optional)",
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept in the audit log with the change.",
    )


class RunFilterForm(_Form):
    status = forms.ChoiceField(
        label="Status",
        required=False,
        choices=[("", "All runs"), *SyncRun.Status.choices],
        error_messages={
            "invalid_choice": "There is no status “%(value)s”; showing runs of every status."
        },
    )

    @property
    def chosen_status(self) -> str | None:
        """The status to show, or None for every status (also when the input is bad)."""
        return (self.cleaned_data.get("status") or None) if self.is_valid() else None


class SchedulePauseForm(_Form):
    """Why the sync schedule is paused; shown while it is, and kept in the audit log."""

    note = forms.CharField(
        label="Why",
        max_length=PAUSE_NOTE_MAX,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Shown on this page while the schedule is paused, and kept in the audit log.",
    )

    def clean_note(self) -> str:
        try:
            return pause_note_clean(self.cleaned_data["note"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["note"]) from None


HISTORY_PAGES_MAX = 1000
_NO_SUCH_PAGE = f"There is no such page: pages go from 1 to {HISTORY_PAGES_MAX}. Showing the first."


class OccurrenceFilterForm(_Form):
    """The schedule history's GET parameters; a bad one is reported and its default used."""

    status = forms.ChoiceField(
        label="Outcome",
        required=False,
        choices=[("", "All outcomes"), *Occurrence.outcome_choices()],
        error_messages={
            "invalid_choice": "There is no outcome “%(value)s”; showing every outcome."
        },
    )
    page = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=HISTORY_PAGES_MAX,
        widget=forms.HiddenInput,
        error_messages={key: _NO_SUCH_PAGE for key in ("invalid", "min_value", "max_value")},
    )

    def chosen(self) -> tuple[str | None, int]:
        """(the outcome to show, or None for every outcome; the page number), each
        falling back to its default when it was refused."""
        self.is_valid()
        return self.cleaned_data.get("status") or None, self.cleaned_data.get("page") or 1
