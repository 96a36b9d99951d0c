"""A tenant's users: adding, inviting, changing and deactivating them.

Every function works on the tenant whose schema the connection is on, and
records what it changed in the tenant's audit trail (target: the user's email).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from notifications.emails import email_build
from scheduling.audit.models import Action
from scheduling.audit.services import Actor, acting_as, actor_current, user_audit_record
from tenants.accounts.models import User
from tenants.accounts.tokens import invite_tokens
from tenants.selectors import tenant_current

EMAIL_TAKEN = "A user with this email address already exists."
LAST_ADMIN = (
    "This is the last active tenant admin. Make another user an admin first, "
    "so that someone can still manage the tenant."
)
NOT_YOURSELF = "You cannot deactivate your own account. Ask another tenant admin."
INVITE_USED = "This invitation link no longer works."


def user_create(*, email: str, full_name: str, role: str, password: str | None = None) -> User:
    """Add a user to the tenant, with `password`, or else invited by email.

    An invited user has an unusable password until they follow the link; the
    email goes out once the transaction commits. Raises ValidationError keyed by
    field when the email is taken (in any letter case) or the role is unknown.
    """
    email = email.strip().lower()
    if role not in User.Role.values:
        raise ValidationError({"role": f"{role!r} is not a role."})
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": EMAIL_TAKEN})
    user = User(email=email, full_name=full_name.strip(), role=role)
    user.password = make_password(password)  # slow on purpose: outside the transaction
    try:
        with transaction.atomic():
            user.save()
            user_audit_record(
                action=Action.USER_CREATED,
                user=user,
                after={
                    "full_name": user.full_name,
                    "role": user.role,
                    "sign_in": "password set" if password else "invited",
                },
            )
            if password is None:
                user_invite_send(user=user)
    except IntegrityError:
        # Another request added the same email between the check and the insert.
        raise ValidationError({"email": EMAIL_TAKEN}) from None
    return user


def user_invite_send(*, user: User) -> None:
    """Email `user` a one-time link to set their password, once the transaction commits.

    Any earlier invitation link stops working. Only for an active user who has
    not set a password yet; raises ValidationError otherwise.
    """
    if user.has_usable_password():
        raise ValidationError(f"{user.email} has already set a password.")
    if not user.is_active:
        raise ValidationError(f"{user.email} is deactivated; reactivate them first.")
    tenant = tenant_current()
    with transaction.atomic():
        user.set_unusable_password()  # a fresh one: the older links' tokens no longer match
        user.save(update_fields=["password"])
        message = email_build(
            name="invite",
            context={
                "user": user,
                "tenant": tenant,
                "link": tenant.url_for(
                    "invite_accept",
                    public_id=user.public_id,
                    token=invite_tokens.make_token(user),
                ),
                "inviter": actor_current(),
                "valid_days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400),
            },
            to=[user.email],
        )
        user_audit_record(action=Action.USER_INVITED, user=user)
        # robust: a mail server that is down is logged; the admin can send it again.
        transaction.on_commit(message.send, robust=True)


def user_invite_accept(*, user: User, token: str, password: str) -> User:
    """Set the invited user's password, which uses up the link. Raises ValidationError
    when the token no longer matches (used, replaced or expired)."""
    password_hash = make_password(password)
    with transaction.atomic(), acting_as(Actor.for_user(user)):
        # Locked and checked again: two submissions of one link set one password.
        user = User.objects.select_for_update().get(pk=user.pk, is_active=True)
        if not invite_tokens.check_token(user, token):
            raise ValidationError(INVITE_USED)
        user.password = password_hash
        user.save(update_fields=["password"])
        user_audit_record(action=Action.USER_INVITE_ACCEPTED, user=user)
    return user


def user_update(*, user: User, actor: User, full_name: str, role: str, is_active: bool) -> User:
    """Change a user's name, role and active state, as the tenant admin `actor`.

    The tenant always keeps one active admin: under a lock on the active admins'
    rows, so that two concurrent demotions cannot both pass. An admin cannot
    deactivate themself. A deactivated user's sessions end at once. Returns the
    saved user; raises ValidationError keyed by field.
    """
    if user.pk == actor.pk and not is_active:
        raise ValidationError({"is_active": NOT_YOURSELF})
    with transaction.atomic():
        admins = set(
            User.objects.select_for_update()
            .filter(role=User.Role.ADMIN, is_active=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if actor.pk not in admins:
            raise PermissionDenied("Only tenant admins can change users.")
        user = User.objects.select_for_update().get(pk=user.pk)
        stays_admin = role == User.Role.ADMIN and is_active
        if user.pk in admins and not stays_admin and len(admins) == 1:
            raise ValidationError({"role" if is_active else "is_active": LAST_ADMIN})
        before = {"full_name": user.full_name, "role": user.role, "is_active": user.is_active}
        user.full_name, user.role, user.is_active = full_name.strip(), role, is_active
        changed = [name for name, value in before.items() if getattr(user, name) != value]
        if changed:
            user.save(update_fields=changed)
            _user_changes_record(user=user, before=before, actor=Actor.for_user(actor))
        if before["is_active"] and not is_active:
            user_sessions_end(user=user)
    return user


def user_email_failing_clear(*, user: User) -> bool:
    """Let digests go to the user's address again after a permanent refusal; True if it was
    marked failing. For when the mailbox has been fixed: the next failure marks it again."""
    with transaction.atomic():
        cleared = User.objects.filter(pk=user.pk, email_failing_since__isnull=False).update(
            email_failing_since=None, email_failure=""
        )
        if cleared:
            user_audit_record(
                action=Action.USER_CHANGED,
                user=user,
                before={"email_failing": True},
                after={"email_failing": False},
            )
    user.email_failing_since, user.email_failure = None, ""
    return bool(cleared)


def _user_changes_record(*, user: User, before: dict, actor: Actor) -> None:
    if before["is_active"] != user.is_active:
        user_audit_record(
            action=Action.USER_REACTIVATED if user.is_active else Action.USER_DEACTIVATED,
            user=user,
            before={"is_active": before["is_active"]},
            after={"is_active": user.is_active},
            actor=actor,
        )
    fields = [name for name in ("full_name", "role") if before[name] != getattr(user, name)]
    if fields:
        user_audit_record(
            action=Action.USER_CHANGED,
            user=user,
            before={name: before[name] for name in fields},
            after={name: getattr(user, name) for name in fields},
            actor=actor,
        )


def user_sessions_end(*, user: User) -> int:
    """Delete the user's sessions on this tenant's site; returns how many.

    Django already refuses an inactive user's session, but a reactivation would
    revive it. Sessions are signed blobs, not rows per user, so each live one is
    decoded: this tenant's table only, and deactivation is rare.
    """
    user_key = str(user.pk)
    keys = [
        session.session_key
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if session.get_decoded().get("_auth_user_id") == user_key
    ]
    deleted, _ = Session.objects.filter(session_key__in=keys).delete()
    return deleted


def user_password_change(*, user: User, password: str) -> None:
    """Set the signed-in user's new password (already validated). Their other sessions end:
    Django checks each session against the password hash."""
    user.set_password(password)
    user.save(update_fields=["password"])
    user_audit_record(action=Action.USER_PASSWORD_CHANGED, user=user)
