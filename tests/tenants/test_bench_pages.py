"""bench_pages: a tiny run prints a row of figures per page and leaves no database behind.

Speed is measured by the command, never asserted here.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.db import connection

from tests.helpers import run_manage

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

NUMBER = r"\d+(?:\.\d+)?"
TINY = ("--tenants", "30", "--runs", "50", "--requests", "5")


def _bench_database() -> str:
    return f"{settings.DATABASES['default']['NAME']}_bench_pages"


def _databases() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cursor.fetchall()}


def _drop_bench_database() -> None:
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{_bench_database()}" WITH (FORCE)')


def _pages() -> list[tuple[str, str]]:
    return [
        ("dashboard", f"bench.{settings.BASE_DOMAIN}/"),
        ("run_history", f"bench.{settings.BASE_DOMAIN}/runs/"),
        ("admin_tenants", f"{settings.BASE_DOMAIN}/admin/tenants/tenant/"),
    ]


def test_it_times_each_page_with_its_query_count_and_drops_its_database():
    result = run_manage("bench_pages", *TINY, timeout=300)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "30 tenants (1 with a schema), 50 runs and 25 users in bench" in result.stdout
    for label, url in _pages():
        # requests, p50, p95, max, queries per request (one number: the same every time)
        row = rf"^{label}\s+{re.escape(url)}\s+5\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+\d+$"
        assert re.search(row, result.stdout, re.MULTILINE), output
        verdict = rf"^{label}: p95 {NUMBER} ms \(target 50 ms: (met|NOT met)\)$"
        assert re.search(verdict, result.stdout, re.MULTILINE), output
    assert f"dropped the bench database {_bench_database()}" in result.stdout
    assert _bench_database() not in _databases()


def test_a_leftover_bench_database_is_replaced_and_keep_leaves_the_new_one():
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{_bench_database()}" TEMPLATE template0')
    try:
        result = run_manage("bench_pages", *TINY, "--keep", timeout=300)

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"kept the bench database {_bench_database()}" in result.stdout
        assert _bench_database() in _databases()
    finally:
        _drop_bench_database()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tenants", "0", "argument --tenants: must be a whole number of at least 1, got '0'"),
        ("--runs", "-5", "argument --runs: must be a whole number of at least 1, got '-5'"),
        ("--requests", "many", "argument --requests: must be a whole number of at least 1"),
        ("--warmup", "1.5", "argument --warmup: must be a whole number of at least 0"),
        ("--target-ms", "0", "argument --target-ms: must be a number above 0, got '0'"),
    ],
)
def test_a_bad_option_is_refused_with_a_clear_error_before_anything_is_created(
    option, value, message
):
    result = run_manage("bench_pages", option, value, timeout=60)

    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert _bench_database() not in _databases()
