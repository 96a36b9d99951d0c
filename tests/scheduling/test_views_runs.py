"""The run history: every user of the tenant reads its runs, newest first, filtered and paged."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from scheduling.models import SyncRun
from scheduling.selectors import sync_run_list
from tests.conftest import logged_in, site_client
from tests.scheduling.sync_pages import runs_create, text

pytestmark = pytest.mark.django_db

URL = "/runs/"
NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # 13:00 CET in Berlin


def _rows(response) -> list[str]:
    """The visible text of each body row of the runs table."""
    table = re.search(r'<table id="runs">.*?<tbody>(.*?)</tbody>', response.content.decode(), re.S)
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    response = site_client(tenant_a).get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={URL}"


def test_a_session_from_another_tenants_site_is_no_session_here(tenant_a, tenant_b, outsider_b):
    runs_create(tenant_a, 2)
    client = logged_in(tenant_b, outsider_b)

    response = client.get(URL, HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={URL}"


def test_only_this_tenants_runs_are_listed(tenant_a, tenant_b, member_a):
    runs_create(tenant_a, 1, newest=NOON)
    runs_create(tenant_b, 3, status=SyncRun.Status.FAILED, error="globex only")

    response = logged_in(tenant_a, member_a).get(URL)

    assert len(_rows(response)) == 1
    assert "globex only" not in response.content.decode()


def test_a_member_reads_runs_newest_first_in_the_tenants_zone(tenant_a, member_a):
    runs_create(tenant_a, 1, newest=NOON - timedelta(hours=1))
    runs_create(
        tenant_a, 1, newest=NOON, status=SyncRun.Status.FAILED, error="Feed said: " + "x" * 200
    )
    with schema_context(tenant_a.schema_name):
        SyncRun.objects.create(started_at=NOON + timedelta(minutes=1))  # still running

    response = logged_in(tenant_a, member_a).get(URL)
    rows = _rows(response)

    assert response.status_code == 200
    assert "Started (Europe/Berlin)" in text(response)
    assert rows[0] == "Running Sat 21 Nov 2026, 13:01:00 CET — 0 0 0"
    assert rows[1].startswith("Failed Sat 21 Nov 2026, 13:00:00 CET 2.0 s 0 1 7 Feed said: xxx")
    assert rows[2] == "OK Sat 21 Nov 2026, 12:00:00 CET 2.0 s 0 1 7"
    html = response.content.decode()
    assert re.search(r"<summary>Feed said: x{60,70}…</summary>", html)  # truncated
    assert '<p class="run-error">Feed said: ' + "x" * 200 + "</p>" in html  # in full
    assert html.count('<th scope="col"') == 7


def test_runs_are_paged_25_at_a_time(tenant_a, member_a):
    runs_create(tenant_a, 30, newest=NOON)
    client = logged_in(tenant_a, member_a)

    first, second = client.get(URL), client.get(URL, {"page": "2"})

    assert len(_rows(first)) == 25 and len(_rows(second)) == 5
    assert _rows(first)[0].startswith("OK Sat 21 Nov 2026, 13:00:00 CET")
    assert _rows(second)[-1].startswith("OK Sat 21 Nov 2026, 12:31:00 CET")
    assert "Page 1 of 2" in text(first) and 'href="?page=2"' in first.content.decode()
    assert 'href="?page=1"' in second.content.decode()


@pytest.mark.parametrize(("page", "shown"), [("abc", 1), ("0", 2), ("999", 2), ("-1", 2)])
def test_a_bad_page_number_shows_a_real_page(tenant_a, member_a, page, shown):
    runs_create(tenant_a, 30, newest=NOON)

    response = logged_in(tenant_a, member_a).get(URL, {"page": page})

    assert response.status_code == 200
    assert f"Page {shown} of 2" in text(response)


def test_the_status_filter_shows_one_status_and_pages_keep_it(tenant_a, member_a):
    runs_create(tenant_a, 27, newest=NOON, status=SyncRun.Status.FAILED, error="boom")
    runs_create(tenant_a, 5, newest=NOON - timedelta(days=1))
    client = logged_in(tenant_a, member_a)

    response = client.get(URL, {"status": "failed"})
    html = response.content.decode()

    assert len(_rows(response)) == 25
    assert all(row.startswith("Failed") for row in _rows(response))
    assert '<option value="failed" selected>Failed</option>' in html
    assert 'href="?status=failed&amp;page=2"' in html
    assert [row.split()[0] for row in _rows(client.get(URL, {"status": "ok"}))] == ["OK"] * 5


def test_an_unknown_status_is_explained_beside_the_filter_and_ignored(tenant_a, member_a):
    runs_create(tenant_a, 2, newest=NOON, status=SyncRun.Status.FAILED)
    runs_create(tenant_a, 1, newest=NOON - timedelta(days=1))

    response = logged_in(tenant_a, member_a).get(URL, {"status": "bogus"})
    html = response.content.decode()

    assert response.status_code == 200
    assert len(_rows(response)) == 3
    assert re.search(
        r'name="status" aria-invalid="true" aria-describedby="id_status_error".*?'
        r'<ul class="errorlist" id="id_status_error"><li>There is no status “bogus”; '
        r"showing runs of every status.</li></ul>",
        html,
        re.S,
    )


def test_an_empty_history_says_so(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    assert _rows(client.get(URL)) == ["No sync has run yet."]
    assert _rows(client.get(URL, {"status": "failed"})) == ["No failed runs."]


def test_htmx_gets_only_the_table_which_refreshes_with_its_filter_and_page(tenant_a, member_a):
    runs_create(tenant_a, 30, newest=NOON, status=SyncRun.Status.FAILED)
    client = logged_in(tenant_a, member_a)

    partial = client.get(URL, {"status": "failed", "page": "2"}, HTTP_HX_REQUEST="true")
    full = client.get(URL)
    html = partial.content.decode()

    assert html.lstrip().startswith(
        '<div id="runs-region" hx-get="/runs/?status=failed&amp;page=2" hx-trigger="every 10s"'
    )
    assert "<html" not in html and "<form" not in html
    assert len(_rows(partial)) == 5
    assert "HX-Request" in partial["Vary"]
    assert re.search(
        r'<form method="get" action="/runs/" class="filters"\s+hx-get="/runs/"[^>]*'
        r'hx-target="#runs-region"[^>]*hx-push-url="true"',
        full.content.decode(),
    )


@pytest.mark.parametrize("htmx", [False, True])
def test_the_history_costs_the_same_queries_with_1_or_30_runs(
    tenant_a, member_a, django_assert_num_queries, htmx
):
    client = logged_in(tenant_a, member_a)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    runs_create(tenant_a, 1, newest=NOON - timedelta(days=1))
    # Domain, session, user, the count and the page of runs, and two SET search_path.
    with django_assert_num_queries(7):
        one = client.get(URL, {"status": "ok"}, **headers)
    runs_create(tenant_a, 29, newest=NOON)
    with django_assert_num_queries(7):
        many = client.get(URL, {"status": "ok"}, **headers)

    assert (len(_rows(one)), len(_rows(many))) == (1, 25)


@pytest.mark.parametrize(
    ("status", "index"), [(None, "syncrun_started"), ("failed", "syncrun_status_started")]
)
def test_the_run_list_reads_along_the_started_at_indexes(tenant_a, status, index):
    runs_create(tenant_a, 50, newest=NOON, status=SyncRun.Status.FAILED)
    with schema_context(tenant_a.schema_name):
        with connection.cursor() as cursor:
            # Few rows make a sequential scan cheapest; rule it out to see which index fits.
            cursor.execute("SET LOCAL enable_seqscan = off")
        plan = sync_run_list(status=status)[:25].explain()

    assert f"Index Scan using {index}" in plan
