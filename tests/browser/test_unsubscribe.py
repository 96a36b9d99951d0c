"""A person follows the unsubscribe link from a digest in a real browser: the page posts
itself and confirms at once, and the digest is off."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import Page, Request, expect

from notifications.unsubscribe import unsubscribe_url
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tests.browser.conftest import Console, screenshot, site_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_following_the_link_confirms_at_once_and_turns_the_digest_off(
    page: Page, live_server, tenant_a, member_a, console: Console
):
    with schema_context(tenant_a.schema_name):
        user_schedule_update(user=member_a, frequency="daily", hour=7)
        path = urlsplit(unsubscribe_url(user=member_a)).path
    requests: list[str] = []

    def _seen(request: Request) -> None:
        if urlsplit(request.url).path == path:
            requests.append(request.method)

    page.on("request", _seen)

    page.goto(site_url(live_server, tenant_a, path))

    expect(page.get_by_role("heading", name="You are unsubscribed", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text("You will get no more digests from Acme Corp")
    assert requests == ["GET", "POST"]  # the link only asks; its own script confirms
    with schema_context(tenant_a.schema_name):
        schedule = UserSchedule.objects.get(user__email=member_a.email)
    assert (schedule.enabled, schedule.next_due_at) == (False, None)
    screenshot(page, "tenant-unsubscribed")
    assert console.errors == []
