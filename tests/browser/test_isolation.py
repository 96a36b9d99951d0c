"""An admin of tenant B gets nothing from tenant A's site, in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import expect_logged_in, log_in, site_url

pytestmark = pytest.mark.django_db(transaction=True)

ACME_PAGES = ["/", "/sync/settings/", "/users/"]


def test_outsider_signed_in_on_globex_is_sent_to_login_on_acme(
    page: Page, live_server, tenant_a, tenant_b, outsider_b
):
    log_in(page, site_url(live_server, tenant_b, "/login/"), outsider_b.email)
    expect_logged_in(page, outsider_b.email)
    # The session cookie belongs to globex's host alone.
    session = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    assert [c["domain"] for c in session] == ["globex.localhost"]

    for path in ACME_PAGES:
        page.goto(site_url(live_server, tenant_a, path))
        expect(page).to_have_url(re.compile(r"^http://acme\.localhost:\d+/login/\?next="))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text(outsider_b.email)
        expect(page.locator("body")).not_to_contain_text("admin@acme.test")


def test_globex_credentials_do_not_open_acme(
    page: Page, live_server, tenant_a, tenant_b, outsider_b, console
):
    log_in(page, site_url(live_server, tenant_b, "/login/"), outsider_b.email)
    expect_logged_in(page, outsider_b.email)

    log_in(page, site_url(live_server, tenant_a, "/login/"), outsider_b.email)

    expect(page.locator(".errorlist")).to_contain_text(
        "Please enter a correct email address and password."
    )
    expect(page).to_have_url(re.compile(r"^http://acme\.localhost:\d+/login/"))
    expect(page.locator(".site-header .who")).to_have_count(0)
    sessions = [c["domain"] for c in page.context.cookies() if c["name"] == "sessionid"]
    assert sessions == ["globex.localhost"]

    page.goto(site_url(live_server, tenant_a, "/users/"))
    expect(page).to_have_url(re.compile(r"/login/\?next=/users/$"))
    assert console.errors == []
