from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, SetPasswordForm

from tenants.accounts.models import User
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


# --- A tenant's users, as its admins manage them ---------------------------------


class _PlainLabels:
    """Labels without Django's trailing colon, as on the sign-in page."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class UserCreateForm(_PlainLabels, forms.Form):
    INVITE, PASSWORD = "invite", "password"

    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    full_name = forms.CharField(label="Full name", max_length=150, required=False)
    role = forms.ChoiceField(choices=User.Role.choices, initial=User.Role.MEMBER)
    sign_in = forms.ChoiceField(
        label="How they sign in",
        choices=[
            (INVITE, "Invite by email: they get a one-time link to set their own password"),
            (PASSWORD, "Set a password now, and tell them yourself"),
        ],
        initial=INVITE,
        widget=forms.RadioSelect,
    )
    password1 = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label="Password again",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rules = " ".join(password_validation.password_validators_help_texts())
        self.fields["password1"].help_text = f"Only when setting a password now. {rules}"

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()

    def clean(self):
        data = super().clean()
        data["password"] = None
        if data.get("sign_in") != self.PASSWORD:
            return data
        first, second = data.get("password1"), data.get("password2")
        if not first:
            self.add_error("password1", "Enter a password, or invite them by email instead.")
        elif first != second:
            self.add_error("password2", "The two passwords don't match.")
        else:
            candidate = User(email=data.get("email", ""), full_name=data.get("full_name", ""))
            try:
                password_validation.validate_password(first, user=candidate)
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
            else:
                data["password"] = first
        return data

    def user_fields(self) -> dict:
        """The keyword arguments of tenants.accounts.services.user_create."""
        return {
            name: self.cleaned_data[name] for name in ("email", "full_name", "role", "password")
        }


class UserEditForm(_PlainLabels, forms.Form):
    full_name = forms.CharField(label="Full name", max_length=150, required=False)
    role = forms.ChoiceField(choices=User.Role.choices)
    is_active = forms.BooleanField(
        label="Active",
        required=False,
        help_text="A deactivated user cannot sign in, and their open sessions end at once.",
    )

    @classmethod
    def for_user(cls, user: User, data=None) -> UserEditForm:
        initial = {"full_name": user.full_name, "role": user.role, "is_active": user.is_active}
        return cls(data, initial=initial)


class InviteAcceptForm(_PlainLabels, SetPasswordForm):
    """Django's set-password form: new password twice, checked by the password validators."""


class AccountPasswordForm(_PlainLabels, PasswordChangeForm):
    """Django's change-password form, without grabbing the focus on a page that shows more."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["old_password"].widget.attrs.pop("autofocus", None)
        self.fields["old_password"].label = "Current password"
