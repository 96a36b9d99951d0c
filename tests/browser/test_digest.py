"""An end user picks a weekly digest in a real browser; the preview follows the form."""

from __future__ import annotations

import re

import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import Page, expect

from scheduling.models import UserSchedule
from tests.browser.conftest import Console, expect_logged_in, log_in, screenshot, site_url

pytestmark = pytest.mark.django_db(transaction=True)

# The preview's times read like "Mon 23 Nov 2026, 08:00 CET", in the user's zone.
MONDAY_AT_8 = re.compile(r"^Mon \d{1,2} \w{3} \d{4}, 08:00 \S+$")
WEEKDAY = re.compile(r"^(\w{3}) ")


def _preview_times(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("#digest-preview li").all_inner_texts()]


def test_member_saves_a_weekly_digest_and_sees_three_mondays_at_eight(
    page: Page, live_server, tenant_a, member_a, console: Console
):
    log_in(page, site_url(live_server, tenant_a, "/login/"), member_a.email)
    expect_logged_in(page, member_a.email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My digest").click()
    expect(page.get_by_role("heading", name="My digest", level=1)).to_be_visible()

    page.get_by_label("Frequency", exact=True).select_option(label="Weekly")
    page.get_by_label("Day", exact=True).select_option(label="Monday")
    page.get_by_label("Hour", exact=True).select_option(label="08:00")
    page.get_by_role("button", name="Save digest settings").click()

    expect(page.locator(".messages[role=status]")).to_contain_text("Saved. Your next digest: Mon")
    preview = page.locator("#digest-preview li")
    expect(preview).to_have_count(3)
    saved = _preview_times(page)
    assert all(MONDAY_AT_8.match(time) for time in saved), saved
    assert len(set(saved)) == 3, saved
    expect(page.locator("#digest-preview")).to_contain_text("Europe/Berlin")
    with schema_context(tenant_a.schema_name):
        schedule = UserSchedule.objects.get(user__email=member_a.email)
    assert (schedule.frequency, schedule.weekday, schedule.hour) == ("weekly", 0, 8)
    assert schedule.timezone == "Europe/Berlin"
    screenshot(page, "tenant-my-digest-saved")

    # htmx swaps a new preview in on change, without loading the page again.
    page.evaluate("() => { window.sameDocument = true; }")
    page.get_by_label("Frequency", exact=True).select_option(label="Daily")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#digest-preview li'))"
        ".some(li => !li.textContent.trim().startsWith('Mon '))"
    )
    expect(preview).to_have_count(3)
    daily = _preview_times(page)
    weekdays = {WEEKDAY.match(time)[1] for time in daily}
    assert len(weekdays) == 3, daily  # three days in a row
    assert all(", 08:00 " in time for time in daily), daily
    assert page.evaluate("() => window.sameDocument") is True
    with schema_context(tenant_a.schema_name):
        schedule.refresh_from_db()
    assert schedule.frequency == "weekly"  # a preview saves nothing
    assert console.errors == []
