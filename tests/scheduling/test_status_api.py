"""/api/status/schedules: the command's JSON, a page at a time, for operators and tokens."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling.jobs import SYNC
from scheduling.models import SyncRun
from tenants.accounts.models import User
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD, TenantFactory
from tests.scheduling.status_landscape import status_landscape_create

pytestmark = pytest.mark.django_db

URL = "/api/status/schedules"
TOKEN = "status-token-for-tests"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _token_and_frozen_clock(settings):
    settings.OPS_API_TOKEN = TOKEN
    # next_run_at of an overdue task is "now": one clock for the command and the API.
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def api() -> Client:
    return Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def _sync_runs(slug: str, statuses: list[str]) -> None:
    with schema_context(slug):
        for hours, status in enumerate(statuses, start=1):
            started = NOW - timedelta(hours=hours)
            SyncRun.objects.create(started_at=started, finished_at=started, status=status)


@pytest.fixture
def landscape(tenant_a, tenant_b):
    status_landscape_create(globex=tenant_b, now=NOW)


def _command_json(*args: str, capsys) -> list[dict]:
    call_command("schedules_status", "--json", *args)
    return json.loads(capsys.readouterr().out)


def _pages(client: Client, query: str) -> list[dict]:
    """Every page, by following `next` from the first."""
    pages, url = [], f"{URL}?{query}"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        pages.append(response.json())
        url = pages[-1]["next"]
    return pages


def test_the_pages_together_are_the_commands_json(landscape, api, capsys):
    pages = _pages(api, "page_size=3")

    rows = [row for page in pages for row in page["results"]]
    assert rows == _command_json(capsys=capsys)
    assert len(rows) == PeriodicTask.objects.count() == 7
    assert [len(page["results"]) for page in pages] == [3, 3, 1]
    assert [(p["page"], p["pages"], p["count"], p["page_size"]) for p in pages] == [
        (1, 3, 7, 3),
        (2, 3, 7, 3),
        (3, 3, 7, 3),
    ]
    assert pages[0]["previous"] is None
    assert pages[1]["previous"] == "http://localhost/api/status/schedules?page_size=3&page=1"
    acme = next(row for row in rows if row["name"] == "tenant:acme:sync")
    assert acme["sync_runs"] == {"ok": 2, "failed": 1, "last_status": "failed"}


def test_every_page_size_covers_every_row_exactly_once(landscape, api):
    names = sorted(PeriodicTask.objects.values_list("name", flat=True))

    for size in (1, 2, 5, 1000):
        rows = [row for page in _pages(api, f"page_size={size}") for row in page["results"]]
        assert [row["name"] for row in rows] == names


def test_the_default_page_holds_up_to_100_rows(landscape, api):
    body = api.get(URL).json()

    assert (body["page"], body["page_size"], body["pages"], body["next"]) == (1, 100, 1, None)
    assert len(body["results"]) == body["count"] == 7


def test_a_tenant_filter_shows_that_tenants_tasks_only_and_matches_the_command(
    landscape, api, capsys
):
    pages = _pages(api, "tenant=globex&page_size=1")

    rows = [row for page in pages for row in page["results"]]
    assert [row["name"] for row in rows] == ["globex nightly", "tenant:globex:sync"]
    assert rows == _command_json("--tenant", "globex", capsys=capsys)
    assert pages[0]["count"] == 2
    assert (
        pages[0]["next"] == "http://localhost/api/status/schedules?tenant=globex&page_size=1&page=2"
    )


def test_a_header_naming_a_tenant_does_not_move_a_task_linked_to_another(landscape, api):
    # The link decides, as in schedules_status: acme's own task stays acme's.
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(
        headers='{"_schema_name": "globex"}'
    )

    names = [row["name"] for row in api.get(f"{URL}?tenant=globex").json()["results"]]

    assert "tenant:acme:sync" not in names


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page: Ensure this value is greater than or equal to 1."),
        ("page=two", "page: Enter a whole number."),
        ("page_size=1001", "page_size: Ensure this value is less than or equal to 1000."),
        ("page_size=0", "page_size: Ensure this value is greater than or equal to 1."),
        ("page=4&page_size=3", "page: there are only 3 page(s)."),
        ("tenant=nope", "No tenant with slug 'nope'."),
        ("tenant=acme%27%3B--", 'No tenant with slug "acme\';--".'),
    ],
)
def test_bad_parameters_are_a_400_that_says_what_is_wrong(landscape, api, query, message):
    response = api.get(f"{URL}?{query}")

    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_it_answers_get_only(api, db):
    assert api.post(URL).status_code == 405
    assert api.head(URL).status_code == 405


def test_a_token_or_an_operator_gets_in(api, operator_client, db):
    assert api.get(URL).status_code == 200
    assert operator_client.get(URL).status_code == 200


def test_no_credentials_or_a_wrong_token_is_a_401(db):
    anonymous = Client(HTTP_HOST="localhost")
    wrong = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer not-the-token")

    for client in (anonymous, wrong):
        response = client.get(URL)
        assert response.status_code == 401
        assert "results" not in response.json()


def test_a_signed_in_user_without_the_schedules_permission_is_a_403(db):
    User.objects.create_user("staff@platform.test", PASSWORD, is_staff=True)
    client = Client(HTTP_HOST="localhost")
    assert client.post("/login/", {"username": "staff@platform.test", "password": PASSWORD})

    response = client.get(URL)

    assert response.status_code == 403
    assert "results" not in response.json()


def test_a_tenant_host_has_no_status_api(outsider_b, tenant_b):
    with_token = site_client(tenant_b)

    assert with_token.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404
    assert logged_in(tenant_b, outsider_b).get(URL).status_code == 404


def test_a_page_costs_the_same_queries_however_many_tenants_it_shows(landscape, api):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(f"{URL}?page_size=1000").status_code == 200
        return len(captured)

    two_tenants = queries()
    for n in range(3):
        _sync_runs(TenantFactory().schema_name, ["ok"] * n)
    five_tenants = queries()

    assert PeriodicTask.objects.filter(task=SYNC.task_name).count() == 6
    assert five_tenants == two_tenants
