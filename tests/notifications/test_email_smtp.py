"""Digests over real SMTP: an aiosmtpd server on loopback receives what the worker sends.

The server answers each recipient the way a test tells it to (accept, 4xx for a
while, 5xx for good), so retries, permanent refusals and "exactly one digest per
user and period" are checked on what really crossed the wire.
"""

from __future__ import annotations

import email
import email.policy
import socket
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings
from django_tenants.utils import schema_context

from notifications.models import DigestDelivery
from notifications.platform.models import DeliveryLog
from notifications.services import digests_dispatch
from notifications.tasks import send_digest
from scheduling.services import user_schedule_update
from tenants.accounts.models import User
from tests.factories import RecordFactory

pytestmark = pytest.mark.django_db

MONDAY_0800_UTC = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)  # 10:00 in Berlin


class Mailbox:
    """aiosmtpd handler: keeps what it accepts; refuses recipients as told."""

    def __init__(self):
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        # address -> list of SMTP replies to give at RCPT, one per attempt, then accept.
        self.replies: dict[str, list[str]] = defaultdict(list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.replies[address]:
            return self.replies[address].pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(
            email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        )
        return "250 Message accepted"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=controller.port,
            EMAIL_HOST_USER="",
            EMAIL_HOST_PASSWORD="",
            EMAIL_USE_TLS=False,
            EMAIL_USE_SSL=False,
            EMAIL_TIMEOUT=5,
        ):
            yield mailbox
    finally:
        controller.stop()


@pytest.fixture
def two_due(admin_a, member_a):
    """In acme: the admin's and the member's daily 09:00 digests are due, with two changes."""
    with schema_context("acme"):
        for user in (admin_a, member_a):
            user_schedule_update(
                user=user, frequency="daily", hour=9, now=MONDAY_0800_UTC - timedelta(days=1)
            )
        RecordFactory(external_id="r-new", changed_at=MONDAY_0800_UTC - timedelta(hours=3))
        RecordFactory(
            external_id="r-updated",
            changed_at=MONDAY_0800_UTC - timedelta(hours=2),
            first_seen_at=MONDAY_0800_UTC - timedelta(days=30),
        )


def _dispatch_and_send(django_capture_on_commit_callbacks, *, now=MONDAY_0800_UTC) -> None:
    """Run the dispatcher, then every queued send task the way a worker would."""
    with schema_context("acme"), django_capture_on_commit_callbacks():
        digests_dispatch(now=now)
    with schema_context("acme"):
        keys = [str(key) for key in DigestDelivery.objects.values_list("public_id", flat=True)]
    for key in keys:
        send_digest.apply(args=[key], headers={"_schema_name": "acme"})


def _parts(message: Message) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_payload(decode=True).decode(part.get_content_charset())
        for part in message.walk()
        if not part.is_multipart()
    }


def test_each_due_user_gets_exactly_one_digest_even_when_dispatch_and_send_run_twice(
    smtp, two_due, django_capture_on_commit_callbacks
):
    _dispatch_and_send(django_capture_on_commit_callbacks)
    _dispatch_and_send(django_capture_on_commit_callbacks)  # a second dispatch, re-sent tasks

    assert sorted(rcpts for _, rcpts in smtp.envelopes) == [
        ["admin@acme.test"],
        ["member@acme.test"],
    ]
    with schema_context("acme"):
        deliveries = {d.recipient: d for d in DigestDelivery.objects.all()}
    assert {d.status for d in deliveries.values()} == {"sent"}
    assert {d.attempts for d in deliveries.values()} == {1}
    received = {m["To"]: m for m in smtp.messages}
    for address, delivery in deliveries.items():
        assert received[address]["Message-ID"] == delivery.provider_message_id
        log = DeliveryLog.objects.get(delivery_public_id=delivery.public_id)
        assert (log.status, log.recipient, log.channel) == ("sent", address, "email")


def test_the_digest_has_a_text_and_an_html_part_and_one_click_unsubscribe_headers(
    smtp, two_due, member_a, django_capture_on_commit_callbacks
):
    _dispatch_and_send(django_capture_on_commit_callbacks)

    message = next(m for m in smtp.messages if m["To"] == "member@acme.test")
    assert message["Subject"] == "Acme Corp daily digest, Mon 8 Jun: 1 new, 1 updated"
    assert message.get_content_type() == "multipart/alternative"
    parts = _parts(message)
    assert set(parts) == {"text/plain", "text/html"}
    # SMTP carries CRLF line ends.
    text, html = (parts[kind].replace("\r\n", "\n") for kind in ("text/plain", "text/html"))
    assert "1 new and 1 updated records between Sun 7 Jun, 10:00 and Mon 8 Jun, 10:00" in text
    assert "- Record r-new\n  New Mon 8 Jun, 07:00\n  https://example.test/r-new" in text
    assert '<a href="https://example.test/r-updated"' in html
    assert "Your daily digest, Mon 8 Jun" in html and ">Acme Corp<" in html

    unsubscribe = str(message["List-Unsubscribe"]).strip()  # a long value is folded
    assert unsubscribe.startswith("<http://acme.localhost/unsubscribe/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = unsubscribe.strip("<>")
    assert f"Unsubscribe with one click: {link}" in text
    assert f'href="{link}"' in html
    assert "Change it: http://acme.localhost/digest/" in text


def test_a_busy_server_4xx_is_retried_until_it_accepts(
    smtp, two_due, django_capture_on_commit_callbacks
):
    smtp.replies["member@acme.test"] = ["451 4.3.0 Mailbox busy, try later"] * 2

    _dispatch_and_send(django_capture_on_commit_callbacks)

    with schema_context("acme"):
        delivery = DigestDelivery.objects.get(recipient="member@acme.test")
        member = User.objects.get(email="member@acme.test")
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    assert member.email_failing_since is None
    assert [rcpts for _, rcpts in smtp.envelopes].count(["member@acme.test"]) == 1


def test_a_permanent_refusal_fails_at_once_and_stops_later_digests_to_that_address(
    smtp, two_due, django_capture_on_commit_callbacks
):
    smtp.replies["member@acme.test"] = ["550 5.1.1 No such mailbox"]

    _dispatch_and_send(django_capture_on_commit_callbacks)

    with schema_context("acme"):
        failed = DigestDelivery.objects.get(recipient="member@acme.test")
        member = User.objects.get(email="member@acme.test")
    assert (failed.status, failed.attempts) == ("failed", 1)  # not retried
    assert "550 5.1.1 No such mailbox" in failed.last_error
    assert member.email_failing_since is not None
    assert "550" in member.email_failure
    assert [rcpts for _, rcpts in smtp.envelopes] == [["admin@acme.test"]]

    # The next day: the member's digest is skipped without touching the server.
    tuesday = MONDAY_0800_UTC + timedelta(days=1)
    with schema_context("acme"):
        RecordFactory(external_id="r-tuesday", changed_at=tuesday - timedelta(hours=1))
    _dispatch_and_send(django_capture_on_commit_callbacks, now=tuesday)

    with schema_context("acme"):
        skipped = DigestDelivery.objects.get(recipient="member@acme.test", period__gt=failed.period)
    assert (skipped.status, skipped.attempts) == ("skipped", 0)
    assert "was refused" in skipped.last_error
    assert [rcpts for _, rcpts in smtp.envelopes].count(["member@acme.test"]) == 0
    assert [rcpts for _, rcpts in smtp.envelopes].count(["admin@acme.test"]) == 2


def test_a_server_that_cannot_be_reached_is_retried_then_the_digest_fails(
    two_due, django_capture_on_commit_callbacks
):
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=_free_port(),  # nothing listens there
        EMAIL_TIMEOUT=2,
    ):
        _dispatch_and_send(django_capture_on_commit_callbacks)

    with schema_context("acme"):
        delivery = DigestDelivery.objects.get(recipient="member@acme.test")
        member = User.objects.get(email="member@acme.test")
    assert (delivery.status, delivery.attempts) == ("failed", send_digest.max_retries + 1)
    assert "could not be reached" in delivery.last_error
    assert member.email_failing_since is None  # a dead server says nothing about the address


@pytest.mark.parametrize(
    ("send_when_empty", "status", "sent"), [(False, "skipped", 0), (True, "sent", 1)]
)
def test_a_period_without_changes_follows_the_users_choice(
    smtp, member_a, django_capture_on_commit_callbacks, send_when_empty, status, sent
):
    with schema_context("acme"):
        user_schedule_update(
            user=member_a,
            frequency="daily",
            hour=9,
            send_when_empty=send_when_empty,
            now=MONDAY_0800_UTC - timedelta(days=1),
        )

    _dispatch_and_send(django_capture_on_commit_callbacks)

    with schema_context("acme"):
        delivery = DigestDelivery.objects.get()
    assert (delivery.status, delivery.record_count, len(smtp.messages)) == (status, 0, sent)
    if sent:
        message = smtp.messages[0]
        assert message["Subject"] == "Acme Corp daily digest, Mon 8 Jun: nothing new"
        assert "Nothing changed in Acme Corp between" in _parts(message)["text/plain"]
    else:
        assert delivery.last_error == "Nothing changed in this period."


def test_a_digest_turned_off_after_dispatch_is_not_sent(
    smtp, two_due, member_a, django_capture_on_commit_callbacks
):
    with schema_context("acme"), django_capture_on_commit_callbacks():
        digests_dispatch(now=MONDAY_0800_UTC)
    with schema_context("acme"):
        user_schedule_update(user=member_a, frequency="off")
        delivery = DigestDelivery.objects.get(recipient="member@acme.test")

    send_digest.apply(args=[str(delivery.public_id)], headers={"_schema_name": "acme"})

    with schema_context("acme"):
        delivery.refresh_from_db()
    assert delivery.status == "skipped"
    assert delivery.last_error == "Digests were turned off before this one was sent."
    assert smtp.messages == []
