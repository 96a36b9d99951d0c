from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from tenants.accounts.throttle import LoginThrottle


class ThrottledAuthenticationForm(AuthenticationForm):
    """Sign-in that stops answering for an account or address after repeated failures."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": (
            "Too many failed sign-ins. Wait %(minutes)d minutes, then try again, "
            "or ask an administrator to reset your password."
        ),
    }

    def clean(self):
        throttle = LoginThrottle(
            email=self.cleaned_data.get("username") or "",
            address=self.request.META.get(settings.LOGIN_CLIENT_ADDRESS_KEY, "")
            if self.request
            else "",
        )
        if throttle.blocked():
            # Checked before the password, so guessing stops here whatever is typed.
            raise forms.ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": settings.LOGIN_FAILURE_WINDOW // 60},
            )
        try:
            data = super().clean()
        except forms.ValidationError:
            throttle.failure_record()
            raise
        throttle.success_record()
        return data


class OperatorAuthenticationForm(ThrottledAuthenticationForm):
    """The operator site admits platform staff only."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError(
                "This sign-in is for platform operators. Sign in on your organisation's own site.",
                code="not_operator",
            )
