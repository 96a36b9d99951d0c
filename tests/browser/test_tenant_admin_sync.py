"""A tenant admin sets the sync interval and runs a sync in a real browser, and every
page of the tenant site loads styled and without script errors."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context
from playwright.sync_api import Browser, Page, expect

from scheduling.models import SyncRun
from scheduling.platform.services import interval_delta
from tests.browser.conftest import (
    PHONE,
    Console,
    expect_logged_in,
    log_in,
    screenshot,
    site_url,
)
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)

RUN_HISTORY_WAIT = 40  # seconds; a worker that has started runs the sync in about one


def _nav(page: Page, name: str) -> None:
    """Follow a link of the main nav and wait until the page it opens marks it as current."""
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name=name, exact=True).click()
    expect(nav.locator("[aria-current=page]")).to_have_text(name)


def _sync_interval(schema_name: str) -> timedelta:
    task = PeriodicTask.objects.select_related("interval").get(name=f"tenant:{schema_name}:sync")
    return interval_delta(task.interval)


@pytest.mark.slow  # starts a real Celery worker
def test_admin_changes_the_interval_and_a_run_now_shows_in_the_history(
    page: Page, live_server, tenant_a, admin_a, console: Console, tmp_path
):
    assert _sync_interval("acme") == timedelta(minutes=15)
    redis.Redis.from_url(settings.REDIS.client).delete("celery")  # no stale messages
    with celery_process(
        "worker",
        tmp_path / "worker.log",
        "--concurrency",
        "1",
        "--without-mingle",
        "--without-gossip",
    ):
        log_in(page, site_url(live_server, tenant_a, "/login/"), admin_a.email)
        expect_logged_in(page, admin_a.email)

        _nav(page, "Sync settings")
        next_run = page.locator("#next-run")
        before = next_run.inner_text()
        page.get_by_label("Sync interval", exact=True).fill("7 minutes")
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator(".messages[role=status]")).to_contain_text("Saved.")
        expect(next_run).not_to_have_text(before)
        assert _sync_interval("acme") == timedelta(minutes=7)

        _nav(page, "Dashboard")
        page.get_by_role("button", name="Run now").click()
        expect(page.locator(".messages[role=status]")).to_contain_text("Sync queued")

        _nav(page, "Run history")
        runs = page.locator("#runs tbody")
        deadline = time.monotonic() + RUN_HISTORY_WAIT
        while not re.search(r"\bOK\b", runs.inner_text()) and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            page.reload()
        expect(runs.locator("tr").first.locator(".badge")).to_have_text("OK", timeout=1000)
        screenshot(page, "tenant-run-history-after-run-now")

    with schema_context("acme"):
        assert list(SyncRun.objects.values_list("status", flat=True)) == [SyncRun.Status.OK]
    assert console.errors == []


TENANT_PAGES = [
    # (nav link, screenshot name, heading)
    ("Dashboard", "tenant-dashboard", "Acme Corp"),
    ("Run history", "tenant-run-history", "Run history"),
    ("My digest", "tenant-my-digest", "My digest"),
    ("Sync settings", "tenant-sync-settings", "Sync settings"),
    ("Users", "tenant-users", "Users"),
    ("Audit log", "tenant-audit-log", "Audit log"),
    ("Account", "tenant-account", "Your account"),
]


def _expect_styled(page: Page) -> None:
    """The site's stylesheet applied: its background and font, not the browser's defaults."""
    body = page.evaluate(
        "() => { const s = getComputedStyle(document.body);"
        " return {bg: s.backgroundColor, font: s.fontFamily, margin: s.margin}; }"
    )
    assert body["bg"] == "rgb(245, 246, 249)", body
    assert "system-ui" in body["font"], body
    assert body["margin"] == "0px", body


def test_every_tenant_page_loads_styled_without_console_errors(
    page: Page, browser: Browser, live_server, tenant_a, admin_a, console: Console
):
    log_in(page, site_url(live_server, tenant_a, "/login/"), admin_a.email)
    expect_logged_in(page, admin_a.email)
    _expect_styled(page)

    for link, name, heading in TENANT_PAGES:
        _nav(page, link)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        _expect_styled(page)
        screenshot(page, name)

    phone = browser.new_context(viewport=PHONE, storage_state=page.context.storage_state())
    try:
        phone_page = phone.new_page()
        console.watch(phone_page)
        phone_page.goto(site_url(live_server, tenant_a, "/"))
        expect_logged_in(phone_page, admin_a.email)
        _expect_styled(phone_page)
        width = phone_page.evaluate("() => document.documentElement.scrollWidth")
        screenshot(phone_page, "tenant-dashboard-phone")
    finally:
        phone.close()
    assert width <= PHONE["width"], "the dashboard scrolls sideways on a phone"
    assert console.errors == []
