"""One-click unsubscribe: the signed link in every digest, and turning the digest off.

The link carries a signature over the tenant's schema name and the user's
public id, with no expiry, so the link in an old email keeps working. It is the
only credential: whoever holds it can turn that one user's digest off, and
nothing else. A link made for one tenant is refused on every other tenant's site.
"""

from __future__ import annotations

import uuid

from django.core import signing
from django.db import connection, transaction
from django_tenants.utils import get_public_schema_name

from scheduling.audit.models import Action
from scheduling.audit.services import Actor, acting_as, audit_noted, digest_change_recorded_as
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tenants.accounts.models import User
from tenants.selectors import tenant_current

SALT = "notifications.unsubscribe"
NOTE = "From the unsubscribe link in a digest email."
INVALID = (
    "This unsubscribe link is not valid: it may have been cut short or changed, "
    "or it was made for another site."
)


class UnsubscribeLinkInvalid(Exception):
    """The token is tampered with, foreign to this tenant, or names no user here."""

    def __init__(self, message: str = INVALID):
        super().__init__(message)
        self.message = message


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)


def unsubscribe_token(*, user: User) -> str:
    """A signed, never-expiring token for `user` of the tenant the connection is on."""
    return _signer().sign_object({"s": connection.schema_name, "u": str(user.public_id)})


def unsubscribe_url(*, user: User) -> str:
    """The absolute unsubscribe link on the current tenant's own site; needs no request."""
    return tenant_current().url_for("unsubscribe", token=unsubscribe_token(user=user))


def unsubscribe_user_get(*, token: str) -> User:
    """The user of this tenant that `token` was made for; raises UnsubscribeLinkInvalid."""
    try:
        claims = _signer().unsign_object(token)
        schema, public_id = claims["s"], uuid.UUID(claims["u"])
    except (signing.BadSignature, ValueError, TypeError, KeyError, AttributeError):
        # A bad signature, or (signed by us, so never expected) a malformed payload.
        raise UnsubscribeLinkInvalid() from None
    here = connection.schema_name
    if schema != here or here == get_public_schema_name():
        raise UnsubscribeLinkInvalid()
    user = User.objects.filter(public_id=public_id).first()
    if user is None:
        raise UnsubscribeLinkInvalid()
    return user


def digest_unsubscribe(*, user: User) -> UserSchedule | None:
    """Turn the user's digest off, keeping its rule; audited as the user's unsubscribe.

    A digest that is already off (or was never set) is left alone and records
    nothing. Returns the user's digest schedule, if they have one.
    """
    with (
        transaction.atomic(),
        acting_as(Actor.for_user(user)),
        audit_noted(NOTE),
        digest_change_recorded_as(Action.DIGEST_UNSUBSCRIBED),
    ):
        schedule = (
            UserSchedule.objects.select_for_update()
            .filter(user=user, kind=UserSchedule.Kind.DIGEST)
            .first()
        )
        if schedule is None or not schedule.is_live:
            return schedule
        return user_schedule_update(
            user=user,
            frequency=schedule.frequency,
            hour=schedule.hour,
            weekday=schedule.weekday,
            timezone_name=schedule.timezone,
            enabled=False,
        )
