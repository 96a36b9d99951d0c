"""The Audit log page of a tenant's site: the tenant's own events, newest first."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from scheduling.audit.models import Action
from scheduling.audit.services import Actor, acting_as, audit_record
from tenants.services import tenant_pause
from tests.conftest import logged_in, site_client

pytestmark = pytest.mark.django_db

# Domain, session, user, count, page, and a SET search_path for public, for the tenant
# and for the selector's explicit schema_context.
LOG_QUERIES = 8
NOON_UTC = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)  # 12:00 in Berlin (CEST)


def _record(tenant, *, n: int = 1, action=Action.TENANT_SETTINGS_CHANGED, **fields) -> None:
    for number in range(n):
        audit_record(
            action=action,
            target=fields.get("target", f"tenant:{tenant.schema_name}"),
            before=fields.get("before", {"sync_interval": 900 + number}),
            after=fields.get("after", {"sync_interval": 600}),
            tenant_slug=tenant.schema_name,
        )
    connection.set_schema_to_public()


def _targets(page: str) -> list[str]:
    return re.findall(r"<td>(tenant:[\w-]+|[\w.]+@[\w.]+)</td>", page)


@pytest.fixture
def admin_client(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    connection.set_schema_to_public()
    return client


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    response = site_client(tenant_a).get("/audit/?action=user.created")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/audit/")


def test_a_member_gets_403(tenant_a, member_a):
    _record(tenant_a)

    response = logged_in(tenant_a, member_a).get("/audit/")

    assert response.status_code == 403
    assert "sync_interval" not in response.content.decode()


def test_a_session_from_another_tenants_site_does_not_work_here(tenant_a, tenant_b, outsider_b):
    client = logged_in(tenant_b, outsider_b)

    response = client.get("/audit/", HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302 and response["Location"] == "/login/?next=/audit/"


def test_a_forged_post_without_a_csrf_token_is_refused(tenant_a, admin_a):
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)
    client.cookies = logged_in(tenant_a, admin_a).cookies

    assert client.post("/audit/", {"action": "tenant.paused"}).status_code == 403
    assert (
        client.post("/audit/", {"action": "tenant.paused"}, HTTP_X_CSRFTOKEN="x").status_code == 403
    )


def test_an_admin_sees_only_their_own_tenants_events(tenant_a, tenant_b, admin_client):
    _record(tenant_a, target="tenant:acme")
    _record(tenant_b, target="tenant:globex")

    page = admin_client.get("/audit/").content.decode()

    assert _targets(page) == ["tenant:acme"]
    assert "globex" not in page
    # tenant.created is in the public trail only: not on the tenant's page either.
    assert "Tenant created" not in page


def test_each_event_shows_when_in_the_tenants_zone_who_what_changes_and_note(
    tenant_a, admin_a, admin_client, time_machine
):
    time_machine.move_to(NOON_UTC)
    _record(
        tenant_a,
        before={"sync_interval": 900, "source_url": ""},
        after={"sync_interval": 600, "source_url": "https://example.test/feed", "enabled": True},
    )
    time_machine.move_to(NOON_UTC + timedelta(minutes=5))
    with acting_as(Actor.for_user(admin_a, schema_name="acme")):
        tenant_pause(tenant=tenant_a, note="Source is down for maintenance")
    connection.set_schema_to_public()

    page = admin_client.get("/audit/").content.decode()

    assert '<th scope="col">When (Europe/Berlin)</th>' in page
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)[1:]
    assert [re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r).group(0) for r in rows] == [
        "2026-07-01 12:05:00",
        "2026-07-01 12:00:00",
    ]
    paused, changed = rows
    assert 'admin@acme.test <span class="muted">(tenant user)</span>' in paused
    assert "Tenant paused" in paused and "status: active → paused" in paused
    assert "Source is down for maintenance" in paused
    assert 'system <span class="muted">(system)</span>' in changed
    assert "Tenant settings changed" in changed
    assert "<li>sync_interval: 900 → 600</li>" in changed
    assert "<li>source_url: &quot;&quot; → https://example.test/feed</li>" in changed
    assert "<li>enabled: (none) → true</li>" in changed


def test_events_come_fifty_to_a_page_newest_first(tenant_a, admin_client, time_machine):
    time_machine.move_to(NOON_UTC)
    _record(tenant_a, target="tenant:acme-oldest")
    time_machine.move_to(NOON_UTC + timedelta(minutes=1))
    _record(tenant_a, n=50)

    first = admin_client.get("/audit/").content.decode()
    second = admin_client.get("/audit/?page=2").content.decode()

    assert len(_targets(first)) == 50 and "tenant:acme-oldest" not in first
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    assert _targets(second) == ["tenant:acme-oldest"]
    assert 'href="?page=1"' in second


def test_the_filter_shows_one_action(tenant_a, admin_client):
    _record(tenant_a, n=3)
    _record(tenant_a, action=Action.USER_CREATED, target="new@acme.test", before={}, after={})

    page = admin_client.get("/audit/?action=user.created").content.decode()

    assert _targets(page) == ["new@acme.test"]
    assert '<option value="user.created" selected>User created</option>' in page


@pytest.mark.parametrize(
    "query",
    ["?page=abc", "?page=-3", "?page=999", "?page=1.5", "?action=", "?action=bogus", "?x=%ff"],
)
def test_bad_query_parameters_never_give_a_500(tenant_a, admin_client, query):
    _record(tenant_a, n=2)

    response = admin_client.get(f"/audit/{query}")

    assert response.status_code == 200
    assert len(_targets(response.content.decode())) == 2


@pytest.mark.parametrize("action", ["user.exploded", "tenant.created"])
def test_an_unknown_action_is_explained_beside_the_filter(tenant_a, admin_client, action):
    page = admin_client.get(f"/audit/?action={action}").content.decode()

    assert f"There is no action “{action}”. Pick one from the list." in page
    assert 'aria-invalid="true"' in page


def test_htmx_gets_only_the_table(tenant_a, admin_client):
    _record(tenant_a)

    response = admin_client.get("/audit/?action=tenant.settings_changed", HTTP_HX_REQUEST="true")

    page = response.content.decode()
    assert page.lstrip().startswith('<div id="audit-table">')
    assert "<html" not in page and "sync_interval: 900 → 600" in page


def test_the_page_takes_the_same_queries_for_one_event_or_thirty(
    tenant_a, admin_client, django_assert_num_queries
):
    _record(tenant_a)
    with django_assert_num_queries(LOG_QUERIES):
        assert len(_targets(admin_client.get("/audit/").content.decode())) == 1

    _record(tenant_a, n=29)
    with django_assert_num_queries(LOG_QUERIES):
        assert len(_targets(admin_client.get("/audit/").content.decode())) == 30


def test_no_events_yet_says_so(tenant_a, admin_client):
    assert "No events yet." in admin_client.get("/audit/").content.decode()
