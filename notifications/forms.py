"""The digest settings a user picks for themselves: checked and converted, never saved here."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.core.validators import URLValidator

from scheduling.forms import TimeZoneSelect
from scheduling.models import UserSchedule
from scheduling.recurrence import Frequency
from tenants.models import Tenant
from tenants.validators import TimezoneValidator

FREQUENCY_CHOICES = [(choice.value, choice.value.capitalize()) for choice in Frequency]
HOUR_CHOICES = [(hour, f"{hour:02d}:00") for hour in range(24)]
WHEN_EMPTY_CHOICES = [
    ("skip", "Skip that digest"),
    ("send", "Send a short \u201cnothing new\u201d note"),
]
# What the form offers before the user has ever chosen an hour or a day.
DEFAULT_HOUR = 8
DEFAULT_WEEKDAY = UserSchedule.Weekday.MONDAY


class DigestSettingsForm(forms.Form):
    frequency = forms.ChoiceField(
        label="Frequency",
        choices=FREQUENCY_CHOICES,
        error_messages={"invalid_choice": "Choose off, hourly, daily or weekly."},
    )
    weekday = forms.TypedChoiceField(
        label="Day",
        choices=UserSchedule.Weekday.choices,
        coerce=int,
        empty_value=None,
        required=False,
        help_text="Used by weekly digests.",
        error_messages={"invalid_choice": "Choose a day from Monday to Sunday."},
    )
    hour = forms.TypedChoiceField(
        label="Hour",
        choices=HOUR_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
        help_text="Used by daily and weekly digests.",
        error_messages={"invalid_choice": "Choose an hour from 00:00 to 23:00."},
    )
    when_empty = forms.ChoiceField(
        label="When nothing changed",
        choices=WHEN_EMPTY_CHOICES,
        widget=forms.RadioSelect,
        required=False,
        error_messages={"invalid_choice": "Choose to skip the digest or to send a short note."},
    )
    timezone = forms.CharField(
        label="Time zone",
        widget=TimeZoneSelect,
        validators=[TimezoneValidator()],
        help_text="Digest times follow this zone's clock, summer time included.",
        error_messages={"required": "Choose a time zone."},
    )

    def __init__(self, data=None, *, schedule: UserSchedule | None, default_zone: str):
        super().__init__(data, initial=_initial(schedule, default_zone))

    def clean_timezone(self) -> ZoneInfo:
        return ZoneInfo(self.cleaned_data["timezone"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        frequency = data.get("frequency")
        if frequency is None:
            return data  # its own error says why; nothing else can be judged
        wanted = {
            "hour": (
                frequency in (Frequency.DAILY, Frequency.WEEKLY),
                "Choose the hour of your daily or weekly digest.",
            ),
            "weekday": (frequency == Frequency.WEEKLY, "Choose the day of your weekly digest."),
        }
        for name, (needed, message) in wanted.items():
            if not needed:
                # A value the frequency doesn't use is ignored, whatever it is.
                self.errors.pop(name, None)
                data[name] = None
            elif data.get(name) is None and name not in self.errors:
                self.add_error(name, message)
        return data

    def rule(self) -> dict[str, Any] | None:
        """The rule shown: the submitted one once valid, the saved one before; None if invalid."""
        if not self.is_bound:
            values = {name: self.initial[name] for name in ("frequency", "hour", "weekday")}
            return values | {"zone": ZoneInfo(self.initial["timezone"])}
        if not self.is_valid():
            return None
        data = self.cleaned_data
        return {
            "frequency": data["frequency"],
            "hour": data["hour"],
            "weekday": data["weekday"],
            "zone": data["timezone"],
        }

    def schedule_fields(self) -> dict[str, Any]:
        """The keyword arguments of scheduling.services.user_schedule_update."""
        rule = self.rule()
        assert rule is not None, "call is_valid() first"
        zone = rule.pop("zone")
        # Left out of an older form or a hand-made POST: keep the stored choice.
        when_empty = self.cleaned_data.get("when_empty") or None
        send_when_empty = None if when_empty is None else when_empty == "send"
        return rule | {"timezone_name": zone.key, "send_when_empty": send_when_empty}


def _initial(schedule: UserSchedule | None, default_zone: str) -> dict[str, Any]:
    if schedule is None:
        return {
            "frequency": Frequency.OFF.value,
            "hour": DEFAULT_HOUR,
            "weekday": DEFAULT_WEEKDAY,
            "timezone": default_zone,
            "when_empty": "skip",
        }
    return {
        "frequency": schedule.frequency,
        "hour": DEFAULT_HOUR if schedule.hour is None else schedule.hour,
        "weekday": DEFAULT_WEEKDAY if schedule.weekday is None else schedule.weekday,
        "timezone": schedule.timezone,
        "when_empty": "send" if schedule.send_when_empty else "skip",
    }


class WebhookForm(forms.Form):
    webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=Tenant._meta.get_field("webhook_url").max_length,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        error_messages={"invalid": "Enter an http:// or https:// URL."},
        help_text="After each sync run, a signed JSON summary is POSTed here. Leave empty to turn "
        "the webhook off.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
