"""An email backend that fails the way an unreachable mail server does."""

from __future__ import annotations

from smtplib import SMTPServerDisconnected

from django.core.mail.backends.base import BaseEmailBackend


class BrokenBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise SMTPServerDisconnected("connection refused by test backend")
