"""Channels behind one small interface: `notify(message)` returns a Receipt or raises
TransportError, which says whether trying again could help.

Transports only talk to the outside world. What to send, and what a failure means
for the delivery's row, is decided by notifications.delivery and the services.
"""

from __future__ import annotations

import smtplib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.utils import make_msgid
from typing import Any, ClassVar

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from notifications.models import Channel
from scheduling.fetch import FetchError, FetchRefused, guarded_request

# HTTP answers that mean "later" rather than "never".
RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429})
# How much of a webhook receiver's answer is kept as the error.
RESPONSE_EXCERPT = 200


@dataclass(frozen=True)
class Receipt:
    message_id: str = ""
    response_code: int | None = None


class TransportError(Exception):
    """A send failed. `permanent` failures are not retried; `response_code` is the
    SMTP or HTTP status when the other side answered."""

    def __init__(self, message: str, *, permanent: bool, response_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.response_code = response_code


class Transport(ABC):
    channel: ClassVar[str]

    @abstractmethod
    def notify(self, message: Any) -> Receipt: ...


class EmailTransport(Transport):
    """Django's configured email backend; SMTP 5xx answers are permanent, the rest transient."""

    channel = Channel.EMAIL

    def notify(self, message: EmailMessage) -> Receipt:
        message_id = message.extra_headers.setdefault(
            "Message-ID", make_msgid(domain=settings.BASE_DOMAIN)
        )
        try:
            get_connection(fail_silently=False).send_messages([message])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(_smtp_text(code, text) for code, text in exc.recipients.values())
            raise TransportError(
                f"The mail server refused the address: {detail}",
                permanent=all(code >= 500 for code in codes),
                response_code=max(codes, default=None),
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise TransportError(
                f"The mail server answered {_smtp_text(exc.smtp_code, exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
                response_code=exc.smtp_code,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            # Refused or dropped connections, timeouts, TLS errors: the server may come back.
            raise TransportError(
                f"The mail server could not be reached: {exc}", permanent=False
            ) from None
        return Receipt(message_id=message_id)


@dataclass(frozen=True)
class WebhookMessage:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class WebhookTransport(Transport):
    """A POST through the sync fetch's guard: no private addresses, no redirects, timeouts.

    2xx is a success. 408, 425, 429, 5xx, timeouts and connection errors are
    transient; any other answer (4xx, a redirect) and a refused URL are permanent.
    """

    channel = Channel.WEBHOOK

    def notify(self, message: WebhookMessage) -> Receipt:
        try:
            response = guarded_request(
                message.url,
                method="POST",
                headers={"Content-Type": "application/json", **message.headers},
                body=message.body,
                connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT,
                read_timeout=settings.WEBHOOK_READ_TIMEOUT,
            )
        except FetchRefused as exc:
            raise TransportError(str(exc), permanent=True) from None
        except FetchError as exc:
            raise TransportError(str(exc), permanent=False) from None
        status = response.status
        if 200 <= status < 300:
            return Receipt(response_code=status)
        excerpt = response.body[:RESPONSE_EXCERPT].decode("utf-8", "replace").strip()
        raise TransportError(
            f"The webhook answered HTTP {status}" + (f": {excerpt}" if excerpt else "."),
            permanent=not (status >= 500 or status in RETRYABLE_HTTP_STATUSES),
            response_code=status,
        )


def _smtp_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()
