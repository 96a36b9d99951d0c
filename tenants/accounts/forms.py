from django import forms
from django.contrib.auth.forms import AuthenticationForm


class OperatorAuthenticationForm(AuthenticationForm):
    """The operator site admits platform staff only."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError(
                "This sign-in is for platform operators. Sign in on your organisation's own site.",
                code="not_operator",
            )
