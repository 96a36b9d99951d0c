"""The operator pauses a tenant from the global admin, in a real browser."""

from __future__ import annotations

import pytest
from django_celery_beat.models import PeriodicTask
from playwright.sync_api import Page, expect

from tenants.models import Tenant
from tests.browser.conftest import log_in, screenshot, site_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_pauses_a_tenant_and_its_sync_task_is_disabled(
    page: Page, live_server, tenant_a, tenant_b, operator, console
):
    assert PeriodicTask.objects.get(name="tenant:acme:sync").enabled is True

    log_in(page, site_url(live_server, path="/login/"), operator.email)
    expect(page.get_by_role("heading", name="Platform")).to_be_visible()

    page.goto(site_url(live_server, path="/admin/tenants/tenant/"))
    acme_row = page.locator("#result_list tbody tr", has_text="Acme Corp")
    expect(acme_row).to_contain_text("Active")
    acme_row.locator("input[name=_selected_action]").check()
    page.locator("select[name=action]").select_option(label="Pause the selected tenants")
    page.get_by_role("button", name="Go").click()

    expect(page.locator("ul.messagelist")).to_contain_text("1 tenant paused.")
    expect(acme_row).to_contain_text("Paused")
    globex_row = page.locator("#result_list tbody tr", has_text="Globex")
    expect(globex_row).to_contain_text("Active")
    screenshot(page, "admin-tenants")

    assert PeriodicTask.objects.get(name="tenant:acme:sync").enabled is False
    assert PeriodicTask.objects.get(name="tenant:globex:sync").enabled is True
    assert Tenant.objects.get(schema_name="acme").status == Tenant.Status.PAUSED

    page.goto(site_url(live_server, path="/admin/django_celery_beat/periodictask/"))
    expect(page.locator("#result_list")).to_contain_text("tenant:acme:sync")
    screenshot(page, "admin-periodic-tasks")
    assert console.errors == []
