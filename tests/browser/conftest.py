"""Playwright driving Debian's Chromium against pytest-django's live server.

One browser for the whole session, a fresh context (cookies, storage) per test.
Tenant sites are http://<slug>.localhost:<port>/ (Chromium resolves *.localhost to
loopback by itself), the operator site is http://localhost:<port>/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tenants.models import Tenant
from tenants.provisioning import schema_drop
from tenants.services import tenant_delete
from tests.factories import PASSWORD, TenantFactory
from tests.helpers import ROOT

# Playwright's sync API runs an asyncio loop in the test thread, so Django sees a running
# loop and refuses ORM calls from that thread (SynchronousOnlyOperation). The tests call
# the ORM only between browser steps, never from inside the loop, so it is safe here.
# Django reads this at each call, so setting it when this conftest loads is early enough.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / ".local" / "screenshots"
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Install the `chromium` package (apt-get install chromium); "
            "never run `playwright install`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@dataclass
class Console:
    """Console errors and uncaught page errors seen by a page."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _message(self, message: ConsoleMessage) -> None:
        # No page links a favicon, so Chromium's own request for /favicon.ico may 404.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location['url']})")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console.watch(page)
    yield page
    context.close()


def site_url(live_server, tenant: Tenant | None = None, path: str = "/") -> str:
    """The URL of `path` on the tenant's site (or the operator site) of the live server."""
    port = urlsplit(live_server.url).port
    host = tenant.primary_host if tenant is not None else "localhost"
    return f"http://{host}:{port}{path}"


def log_in(page: Page, url: str, email: str, password: str = PASSWORD) -> None:
    """Sign in through the login form at `url`, as a person would."""
    page.goto(url)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def screenshot(page: Page, name: str) -> None:
    """A full-page PNG in .local/screenshots/, to look at after the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def expect_logged_in(page: Page, email: str) -> None:
    expect(page.locator(".site-header .who")).to_contain_text(email)


# --- Standing people, committed for the live server ---------------------------------
# The live server thread and worker processes only see committed rows, so these tests
# use transactional_db. Its flush empties the public tables only; the tenant schemas
# are dropped here.


def _tenant(slug: str, name: str, timezone_name: str) -> Iterator[Tenant]:
    schema_drop(schema_name=slug)  # left over by an interrupted run on a kept database
    tenant = TenantFactory(name=name, slug=slug, timezone_name=timezone_name)
    yield tenant
    connection.set_schema_to_public()
    tenant = Tenant.objects.filter(pk=tenant.pk).first()
    if tenant is not None:
        tenant_delete(tenant=tenant)
    else:
        schema_drop(schema_name=slug)


@pytest.fixture
def tenant_a(transactional_db) -> Iterator[Tenant]:
    yield from _tenant("acme", "Acme Corp", "Europe/Berlin")


@pytest.fixture
def tenant_b(transactional_db) -> Iterator[Tenant]:
    yield from _tenant("globex", "Globex", "America/New_York")
