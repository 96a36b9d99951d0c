"""One-time invitation links."""

from __future__ import annotations

from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.db import connection


class InviteTokenGenerator(PasswordResetTokenGenerator):
    """Tokens that expire after PASSWORD_RESET_TIMEOUT and stop working once used.

    The hash covers the password, so setting one (accepting the invitation) or
    sending a new invitation (a fresh unusable password) ends every older link.
    Its own salt keeps them apart from password-reset tokens, and the schema
    keeps one tenant's token from meaning anything on another tenant's site.
    """

    key_salt = "tenants.accounts.tokens.InviteTokenGenerator"

    def _make_hash_value(self, user, timestamp: int) -> str:
        return f"{connection.schema_name}:{super()._make_hash_value(user, timestamp)}"


invite_tokens = InviteTokenGenerator()
