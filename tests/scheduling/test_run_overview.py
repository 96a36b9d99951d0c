"""The operators' run overview: which tenants' syncs failed lately, read from the public
SyncFailure copies that sync_run writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from django_tenants.utils import schema_context

from scheduling.models import SyncRun
from scheduling.platform.models import SyncFailure
from scheduling.platform.selectors import sync_failure_counts, tenant_sync_failures
from scheduling.platform.tasks import cleanup_runs
from scheduling.services import sync_run
from scheduling.tasks import sync_tenant
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.services import tenant_delete, tenant_pause
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD
from tests.feeds import FeedServer

pytestmark = pytest.mark.django_db

URL = "/admin/scheduling_platform/syncfailure/"


@pytest.fixture
def failing_feed():
    server = FeedServer()
    server.status = 503
    yield server
    server.close()


def _use_feed(tenant: Tenant, feed: FeedServer) -> None:
    tenant.source_kind, tenant.source_url = Tenant.SourceKind.HTTP_JSON, feed.url
    tenant.save()


def _failure(tenant: Tenant, *, ago: timedelta, error: str = "boom") -> SyncFailure:
    started = timezone.now() - ago
    return SyncFailure.objects.create(
        tenant=tenant,
        run_public_id=uuid.uuid4(),
        started_at=started,
        finished_at=started + timedelta(seconds=2),
        error=error,
    )


def _bare_tenants(count: int) -> list[Tenant]:
    """Tenant rows without schemas: the overview reads only the public schema."""
    return Tenant.objects.bulk_create(
        Tenant(name=f"Bare {n:03d}", schema_name=f"bare{n:03d}") for n in range(count)
    )


def _listed(response) -> list[tuple[str, int, str]]:
    return [
        (row.tenant.schema_name, row.failures, row.last_error) for row in response.context["rows"]
    ]


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def failures(tenant_a, tenant_b):
    """acme: three failures in the last day and one older; globex (paused): one just now."""
    tenant_pause(tenant=tenant_b)
    _failure(tenant_a, ago=timedelta(minutes=50), error="The source answered HTTP 503.")
    _failure(tenant_a, ago=timedelta(hours=2), error="older")
    _failure(tenant_a, ago=timedelta(hours=5), error="older still")
    _failure(tenant_a, ago=timedelta(hours=30), error="a day ago")
    _failure(tenant_b, ago=timedelta(minutes=10), error="The feed is not valid JSON. " * 10)


# --- What operators see ---------------------------------------------------------------


def test_an_operator_sees_each_failing_tenant_with_its_count_last_failure_and_error(
    tenant_a, tenant_b, failures, operator_client
):
    response = operator_client.get(URL)

    assert response.status_code == 200
    assert _listed(response) == [
        ("acme", 3, "The source answered HTTP 503."),
        ("globex", 1, "The feed is not valid JSON. " * 10),
    ]
    totals = response.context["totals"]
    assert (totals.tenants, totals.failures) == (2, 4)
    html = response.content.decode()
    assert '<strong id="tenants-failing">2</strong> tenants failing' in html
    assert '<strong id="failures">4</strong> failed syncs' in html
    assert f'href="/admin/tenants/tenant/{tenant_a.pk}/change/">Acme Corp</a>' in html
    assert f'href="/admin/tenants/tenant/{tenant_b.pk}/change/">Globex</a>' in html
    assert '<td class="field-status">paused</td>' in html
    assert '<td class="field-status">active</td>' in html
    assert ">" + "The feed is not valid JSON. " * 3 + "The feed is not…</td>" in html  # 100 chars
    assert "(times in UTC)" in html and "last failure (UTC)" in html
    last = response.context["rows"][0].last_failure_at
    assert f"{last:%Y-%m-%d %H:%M:%S}" in html


def test_the_overview_is_reachable_from_the_admin_index(operator_client):
    html = operator_client.get("/admin/").content.decode()

    assert f'<a href="{URL}">Run overview</a>' in html


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ("1", [("globex", 1), ("acme", 1)]),  # a tie: the latest failure first
        ("24", [("acme", 3), ("globex", 1)]),
        ("168", [("acme", 4), ("globex", 1)]),
    ],
)
def test_the_period_is_the_last_hour_day_or_week(failures, operator_client, hours, expected):
    response = operator_client.get(URL, {"hours": hours})

    assert [(slug, count) for slug, count, _ in _listed(response)] == expected
    assert response.context["hours"] == int(hours)
    assert _messages(response) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"hours": "bogus"}, "The period must be 1, 24 or 168 hours; showing the last 24 hours."),
        ({"hours": "5"}, "The period must be 1, 24 or 168 hours; showing the last 24 hours."),
        ({"tenant": "not-a-uuid"}, "No such tenant; showing every tenant."),
        ({"tenant": str(uuid.uuid4())}, "No such tenant; showing every tenant."),
    ],
)
def test_a_bad_parameter_is_reported_and_its_default_used(
    failures, operator_client, query, message
):
    response = operator_client.get(URL, query)

    assert response.status_code == 200
    assert _messages(response) == [message]
    assert message in response.content.decode()
    assert response.context["hours"] == 24
    assert [(slug, count) for slug, count, _ in _listed(response)] == [("acme", 3), ("globex", 1)]


@pytest.mark.parametrize("page", ["abc", "0", "99", "-1"])
def test_a_bad_page_number_shows_a_page_and_no_error(failures, operator_client, page):
    response = operator_client.get(URL, {"page": page})

    assert response.status_code == 200
    assert [slug for slug, _, _ in _listed(response)] == ["acme", "globex"]


def test_the_count_links_to_that_tenants_failures_newest_first(tenant_a, failures, operator_client):
    html = operator_client.get(URL).content.decode()
    assert f'href="?hours=24&amp;tenant={tenant_a.public_id}"' in html

    response = operator_client.get(URL, {"hours": "168", "tenant": str(tenant_a.public_id)})

    listed = [failure.error for failure in response.context["page"]]
    assert listed == ["The source answered HTTP 503.", "older", "older still", "a day ago"]
    page = response.content.decode()
    assert "Sync failures of Acme Corp" in page and "4</strong> failures in the last 7 days" in page
    assert "not valid JSON" not in page


def test_the_overview_is_paginated_most_failures_first(tenant_a, operator_client):
    for tenant in _bare_tenants(54):
        _failure(tenant, ago=timedelta(hours=1))
    _failure(tenant_a, ago=timedelta(hours=2))
    _failure(tenant_a, ago=timedelta(hours=3))

    first = operator_client.get(URL)
    second = operator_client.get(URL, {"page": "2"})

    assert len(first.context["rows"]) == 50 and len(second.context["rows"]) == 5
    assert _listed(first)[0] == ("acme", 2, "boom")
    listed = {slug for slug, _, _ in _listed(first) + _listed(second)}
    assert len(listed) == 55
    assert (first.context["totals"].tenants, first.context["totals"].failures) == (55, 56)
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="?hours=24&amp;page=2">next</a>' in first.content.decode()


# --- Cost -------------------------------------------------------------------------------

# One SET search_path (public) and then:
OVERVIEW_QUERIES = 1 + 5  # session, user, totals, the page's counts, its tenants and last errors
DRILL_DOWN_QUERIES = 1 + 5  # session, user, the tenant, its failure count, the page


def test_the_overview_reads_a_fixed_number_of_queries_however_many_tenants_fail(
    tenant_a, operator_client, django_assert_num_queries
):
    _failure(tenant_a, ago=timedelta(hours=1))
    with django_assert_num_queries(OVERVIEW_QUERIES):
        assert len(operator_client.get(URL).context["rows"]) == 1

    for tenant in _bare_tenants(29):
        for hours in (1, 2, 3):
            _failure(tenant, ago=timedelta(hours=hours))
    with django_assert_num_queries(OVERVIEW_QUERIES):
        assert len(operator_client.get(URL).context["rows"]) == 30

    query = {"tenant": str(tenant_a.public_id)}
    with django_assert_num_queries(DRILL_DOWN_QUERIES):
        assert len(operator_client.get(URL, query).context["page"]) == 1
    for minutes in range(30):
        _failure(tenant_a, ago=timedelta(minutes=minutes))
    with django_assert_num_queries(DRILL_DOWN_QUERIES):
        assert len(operator_client.get(URL, query).context["page"]) == 31


def test_the_overview_queries_can_be_served_by_their_indexes(tenant_a):
    _failure(tenant_a, ago=timedelta(hours=1))
    since = timezone.now() - timedelta(hours=24)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned anyway

    # Totals and per-tenant counts: failures since T. Latest error and drill-down: one tenant's.
    assert "syncfailure_started" in sync_failure_counts(since=since).explain()
    latest = tenant_sync_failures(tenant=tenant_a, since=since)[:1]
    assert "syncfailure_tenant_started" in latest.explain()


# --- Who may see it -----------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(failures):
    response = site_client().get(URL, follow=True)

    assert response.redirect_chain[-1][0].startswith("/login/")
    assert "boom" not in response.content.decode()


def test_tenant_users_find_no_admin_on_their_own_sites(tenant_a, admin_a, tenant_b, outsider_b):
    for tenant, user in ((tenant_a, admin_a), (tenant_b, outsider_b)):
        assert logged_in(tenant, user).get(URL).status_code == 404


def test_a_tenant_session_does_not_sign_in_on_the_operator_site(tenant_a, admin_a, failures):
    client = logged_in(tenant_a, admin_a)

    response = client.get(URL, HTTP_HOST=settings.BASE_DOMAIN)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_staff_without_the_view_permission_are_refused(failures):
    User.objects.create_user("helpdesk@platform.test", PASSWORD, is_staff=True)
    client = site_client()
    client.post("/login/", {"username": "helpdesk@platform.test", "password": PASSWORD})

    response = client.get(URL)

    assert response.status_code == 403
    assert "HTTP 503" not in response.content.decode()


def test_a_forged_post_is_refused(operator, failures):
    client = Client(enforce_csrf_checks=True, HTTP_HOST=settings.BASE_DOMAIN)
    client.force_login(operator)

    assert client.post(URL, {"action": "delete_selected"}).status_code == 403
    assert SyncFailure.objects.count() == 5


def test_failures_cannot_be_added_changed_or_deleted_in_the_admin(failures, operator_client):
    failure = SyncFailure.objects.first()

    assert operator_client.get(f"{URL}add/").status_code == 403
    assert operator_client.post(f"{URL}{failure.pk}/delete/", {"post": "yes"}).status_code == 403
    assert SyncFailure.objects.count() == 5


# --- Where the rows come from and where they go ---------------------------------------------


def test_a_failed_sync_records_a_public_failure_with_its_run(tenant_a, tenant_b, failing_feed):
    _use_feed(tenant_a, failing_feed)
    with schema_context("globex"):
        sync_run(tenant=tenant_b)  # the demo source: ok, nothing recorded

    result = sync_tenant.apply(headers={"_schema_name": "acme"})  # as the worker runs it

    assert result.successful()
    with schema_context("acme"):
        run = SyncRun.objects.get()
    failure = SyncFailure.objects.get()
    assert (failure.tenant, failure.run_public_id, failure.error) == (
        tenant_a,
        run.public_id,
        "The source answered HTTP 503.",
    )
    assert (failure.started_at, failure.finished_at) == (run.started_at, run.finished_at)
    assert run.status == SyncRun.Status.FAILED


def test_an_ok_sync_records_no_failure(tenant_a):
    with schema_context("acme"):
        assert sync_run(tenant=tenant_a).status == SyncRun.Status.OK

    assert not SyncFailure.objects.exists()


def test_deleting_a_tenant_deletes_its_failures(tenant_a, tenant_b, failures):
    tenant_delete(tenant=tenant_a)

    assert list(SyncFailure.objects.values_list("tenant__schema_name", flat=True)) == ["globex"]


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@override_settings(RUN_HISTORY_DAYS=30)
def test_cleanup_deletes_failures_with_their_runs(tenant_a, tenant_b, failing_feed, time_machine):
    _use_feed(tenant_a, failing_feed)
    for age in (40, 1):
        time_machine.move_to(NOW - timedelta(days=age), tick=False)
        with schema_context("acme"):
            sync_run(tenant=tenant_a)
    time_machine.move_to(NOW, tick=False)

    # The old run and its public copy; globex had nothing to lose.
    assert cleanup_runs.apply().get() == {"acme": 2, "globex": 0}
    [kept] = SyncFailure.objects.all()
    assert kept.started_at == NOW - timedelta(days=1)
    with schema_context("acme"):
        assert list(SyncRun.objects.values_list("public_id", flat=True)) == [kept.run_public_id]
