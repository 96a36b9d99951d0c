from __future__ import annotations

from django import forms

from scheduling.audit.models import Action
from scheduling.audit.services import PLATFORM_ONLY_ACTIONS

# A tenant's own trail never holds the platform-only events, so they are not offered.
TENANT_ACTIONS = [
    (value, label) for value, label in Action.choices if value not in PLATFORM_ONLY_ACTIONS
]


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("", "All actions"), *TENANT_ACTIONS],
        required=False,
        error_messages={
            "invalid_choice": "There is no action “%(value)s”. Pick one from the list.",
        },
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_action(self) -> Action | None:
        value = self.cleaned_data["action"]
        return Action(value) if value else None

    def action_or_none(self) -> Action | None:
        """The chosen action, or None for all (also when the choice is not valid)."""
        return self.cleaned_data.get("action") if self.is_valid() else None
