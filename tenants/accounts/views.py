from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from tenants.accounts import services
from tenants.accounts.decorators import tenant_admin_required
from tenants.accounts.forms import (
    AccountPasswordForm,
    InviteAcceptForm,
    OperatorAuthenticationForm,
    ThrottledAuthenticationForm,
    UserCreateForm,
    UserEditForm,
)
from tenants.accounts.tokens import invite_tokens
from tenants.selectors import tenant_invitee_get, tenant_user_get, tenant_user_list

tenant_login = auth_views.LoginView.as_view(
    template_name="account/login.html",
    authentication_form=ThrottledAuthenticationForm,
    redirect_authenticated_user=True,
)
operator_login = auth_views.LoginView.as_view(
    template_name="account/login.html",
    authentication_form=OperatorAuthenticationForm,
    redirect_authenticated_user=True,
    extra_context={"operator": True},
)
logout = auth_views.LogoutView.as_view()


@tenant_admin_required
def user_list(request):
    return render(request, "account/users.html", {"users": tenant_user_list()})


@tenant_admin_required
def user_create(request):
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_create(**form.user_fields())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            how = "Invitation sent to" if form.cleaned_data["password"] is None else "Added"
            messages.success(request, f"{how} {user.email}.")
            return redirect("user_list")
    return render(request, "account/user_form.html", {"form": form})


@tenant_admin_required
def user_edit(request, public_id: uuid.UUID):
    user = tenant_user_get(public_id=public_id, actor=request.user)
    form = UserEditForm.for_user(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_update(user=user, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Saved {user.email}.")
            # An admin who just made themself a member can no longer see the list.
            demoted_self = user.pk == request.user.pk and not user.is_tenant_admin
            return redirect("home" if demoted_self else "user_list")
    return render(request, "account/user_edit.html", {"form": form, "member": user})


@tenant_admin_required
@require_POST
def user_invite_resend(request, public_id: uuid.UUID):
    user = tenant_user_get(public_id=public_id, actor=request.user)
    try:
        services.user_invite_send(user=user)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        messages.success(request, f"A new invitation was sent to {user.email}.")
    return redirect("user_edit", public_id=user.public_id)


def invite_accept(request, public_id: uuid.UUID, token: str):
    user = tenant_invitee_get(public_id=public_id)
    if user is None or not invite_tokens.check_token(user, token):
        status = 404 if user is None else 400
        return render(request, "account/invite_invalid.html", status=status)
    form = InviteAcceptForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        password = form.cleaned_data["new_password1"]
        try:
            services.user_invite_accept(user=user, token=token, password=password)
        except ValidationError:
            return render(request, "account/invite_invalid.html", status=400)
        messages.success(
            request, "Your password is set. Sign in with your email address and new password."
        )
        return redirect("login")
    return render(request, "account/invite_accept.html", {"form": form, "invitee": user})


@login_required
def account(request):
    form = AccountPasswordForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.user_password_change(
            user=request.user, password=form.cleaned_data["new_password1"]
        )
        update_session_auth_hash(request, request.user)
        messages.success(request, "Your password has been changed.")
        return redirect("account")
    return render(request, "account/account.html", {"form": form})
