"""The operators' tenant list, its actions, and onboarding from the admin."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context, schema_exists

from scheduling.models import SyncRun
from tenants.models import Tenant
from tenants.services import tenant_pause
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD, TenantFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/tenants/tenant/"
ADD_URL = "/admin/tenants/tenant/add/"
QUEUE = "tenant-admin-run-now-test"


def _rows(response) -> dict[str, str]:
    """Each result row's visible text, keyed by the tenant's name (its first column)."""
    body = re.search(r"<tbody>(.*?)</tbody>", response.content.decode(), re.S)
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body.group(1) if body else "", re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        # The first cell is the selection checkbox.
        text = [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells[1:]]
        rows[text[0]] = " | ".join(text)
    return rows


def _act(client, action: str, *tenants: Tenant) -> list[str]:
    response = client.post(
        LIST_URL,
        {"action": action, "_selected_action": [t.pk for t in tenants]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def _sync_task(slug: str) -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:sync")


def _onboarding_data(**changes) -> dict:
    return {
        "name": "Initech",
        "slug": "initech",
        "timezone": "Europe/Paris",
        "sync_interval": "30m",
        "admin_email": "boss@initech.test",
        "admin_password": PASSWORD,
        **changes,
    }


# --- The list --------------------------------------------------------------------


def test_the_list_shows_each_tenants_settings_and_activity(
    operator_client, tenant_a, member_a, tenant_b
):
    now = timezone.now()
    with schema_context("acme"):
        SyncRun.objects.create(started_at=now - timedelta(hours=1), status="failed")
        SyncRun.objects.create(started_at=now, finished_at=now, status="ok")
    Tenant.objects.filter(pk=tenant_b.pk).update(sync_interval=timedelta(hours=1))

    rows = _rows(operator_client.get(LIST_URL))

    host = settings.BASE_DOMAIN
    assert (
        rows["Acme Corp"] == f"Acme Corp | acme | acme.{host} | Active | every 15 minutes | OK | 2"
    )
    assert rows["Globex"] == f"Globex | globex | globex.{host} | Active | every hour | never | 1"


def test_filters_and_search_narrow_the_list(operator_client, tenant_a, tenant_b):
    tenant_pause(tenant=tenant_b)
    Tenant.objects.filter(pk=tenant_a.pk).update(
        source_kind="http_json", source_url="https://feeds.acme.test/items"
    )

    def names(query: str) -> set[str]:
        return set(_rows(operator_client.get(f"{LIST_URL}?{query}")))

    assert names("status__exact=paused") == {"Globex"}
    assert names("status__exact=active") == {"Acme Corp"}
    assert names("source_kind__exact=http_json") == {"Acme Corp"}
    assert names("source_kind__exact=demo") == {"Globex"}
    assert names("q=globex.") == {"Globex"}  # by domain


def test_the_list_costs_the_same_queries_however_many_tenants_are_on_the_page(
    operator_client, tenant_a, tenant_b
):
    # The bound: a page's per-schema activity costs two queries in all, one finding the
    # schemas that are ready and one UNION ALL across them; never one per tenant.
    def page_queries() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            assert operator_client.get(LIST_URL).status_code == 200
        return [query["sql"] for query in queries]

    two = page_queries()
    TenantFactory(name="Initech", slug="initech")
    TenantFactory(name="Umbrella", slug="umbrella")
    four = page_queries()

    assert len(four) == len(two)
    [union] = [sql for sql in four if "UNION ALL" in sql]
    assert all(f'"{slug}"."accounts_user"' in union for slug in ("acme", "globex", "initech"))


def test_a_tenant_whose_schema_is_missing_still_lists(operator_client, tenant_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(schema_name="lost")  # a row with no schema

    rows = _rows(operator_client.get(LIST_URL))

    assert rows["Acme Corp"].endswith("| schema missing | -")


# --- Actions ---------------------------------------------------------------------


def test_pause_disables_the_sync_task_and_resume_enables_it(operator_client, tenant_a, tenant_b):
    tenant_pause(tenant=tenant_b)

    paused = _act(operator_client, "pause_tenants", tenant_a, tenant_b)
    assert _sync_task("acme").enabled is False
    assert paused == ["1 tenant paused.", "1 tenant already paused."]

    resumed = _act(operator_client, "resume_tenants", tenant_a)
    assert _sync_task("acme").enabled is True
    assert resumed == ["1 tenant resumed."]
    assert Tenant.objects.get(pk=tenant_a.pk).is_active


def test_run_now_sends_the_sync_in_the_tenants_schema_and_refuses_a_paused_one(
    operator_client, tenant_a, tenant_b
):
    tenant_pause(tenant=tenant_b)
    PeriodicTask.objects.filter(name__in=["tenant:acme:sync", "tenant:globex:sync"]).update(
        queue=QUEUE
    )
    broker = redis.Redis.from_url(settings.REDIS.client)
    try:
        shown = _act(operator_client, "run_sync_now", tenant_a, tenant_b)
        raw = broker.lrange(QUEUE, 0, -1)
    finally:
        broker.delete(QUEUE)

    [message] = [json.loads(item) for item in raw]
    assert message["headers"]["_schema_name"] == "acme"
    assert message["headers"]["task"] == _sync_task("acme").task
    assert shown == [
        "Not sent: Globex is paused; resume it before running a sync.",
        "Sync sent for 1 tenant.",
    ]


def test_reconcile_repairs_a_schedule_and_says_what_it_did(operator_client, tenant_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(enabled=False)  # a hand edit

    shown = _act(operator_client, "reconcile_schedules", tenant_a)

    assert shown == ["Schedules reconciled: updated tenant:acme:sync (enabled)."]
    assert _sync_task("acme").enabled is True
    assert _act(operator_client, "reconcile_schedules", tenant_a) == [
        "Schedules reconciled: nothing to repair."
    ]


# --- Onboarding ------------------------------------------------------------------


def test_the_add_form_onboards_a_working_tenant(operator_client):
    form = operator_client.get(ADD_URL).context["adminform"].form
    assert list(form.fields) == list(_onboarding_data())

    response = operator_client.post(ADD_URL, _onboarding_data())

    tenant = Tenant.objects.get(schema_name="initech")
    assert response.status_code == 302
    assert schema_exists("initech")
    assert (tenant.name, tenant.timezone) == ("Initech", "Europe/Paris")
    assert tenant.sync_interval == timedelta(minutes=30)
    assert tenant.domains.get(is_primary=True).domain == tenant.primary_host
    assert _sync_task("initech").enabled is True
    login = site_client(tenant).post(
        "/login/", {"username": "boss@initech.test", "password": PASSWORD}
    )
    assert login.status_code == 302


def test_the_add_form_shows_a_generated_password_once(operator_client):
    response = operator_client.post(ADD_URL, _onboarding_data(admin_password=""), follow=True)

    shown = [str(message) for message in response.context["messages"]]
    [password] = [m.rsplit(": ", 1)[1] for m in shown if m.startswith("Generated password")]
    tenant = Tenant.objects.get(schema_name="initech")
    login = site_client(tenant).post(
        "/login/", {"username": "boss@initech.test", "password": password}
    )
    assert login.status_code == 302
    assert password not in operator_client.get(LIST_URL).content.decode()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"slug": "Bad Slug!"}, "A slug may hold lowercase letters"),
        ({"name": "acme corp", "slug": "acme2"}, "A tenant with this name already exists."),
        ({"slug": "acme"}, "A tenant with this slug already exists."),
        ({"timezone": "Mars/Olympus"}, "is not an IANA time zone name"),
        ({"sync_interval": "15 parsecs"}, "is not an interval"),
        ({"admin_password": "123"}, "This password is too short."),
    ],
)
def test_bad_input_shows_on_the_form_and_creates_nothing(operator_client, tenant_a, changes, error):
    tenants_before = Tenant.objects.count()

    response = operator_client.post(ADD_URL, _onboarding_data(**changes))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert Tenant.objects.count() == tenants_before
    assert not schema_exists("initech") and not schema_exists("acme2")


# --- Access ----------------------------------------------------------------------


def test_tenant_users_cannot_reach_the_tenant_admin(tenant_a, admin_a, outsider_b):
    client = logged_in(tenant_a, admin_a)
    assert client.get(LIST_URL).status_code == 404  # the tenant site has no admin at all
    assert client.post(ADD_URL, _onboarding_data()).status_code == 404

    operator_site = Client(HTTP_HOST=settings.BASE_DOMAIN)
    for user in (admin_a, outsider_b):
        login = operator_site.post("/login/", {"username": user.email, "password": PASSWORD})
        assert login.status_code != 302  # tenant accounts do not exist on the operator site
    assert operator_site.get(LIST_URL).status_code == 302  # to the login page
    assert not Tenant.objects.filter(schema_name="initech").exists()


def test_deleting_a_tenant_in_the_admin_drops_its_schema_and_tasks(
    tenant_a, tenant_b, operator_client
):
    from django_celery_beat.models import PeriodicTask
    from django_tenants.utils import schema_exists

    url = f"/admin/tenants/tenant/{tenant_a.pk}/delete/"
    response = operator_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not schema_exists("acme")
    assert not PeriodicTask.objects.filter(name__startswith="tenant:acme:").exists()
    assert schema_exists("globex")
