"""Static files in production: collectstatic writes content-hashed names, pages link them,
and WhiteNoise serves them from a real gunicorn (deploy/gunicorn.conf.py) on the operator
host and on a tenant's host, cached for good."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tenants.models import Tenant
from tenants.provisioning import schema_drop
from tenants.services import tenant_delete
from tests import helpers
from tests.deploy.commands import ROOT, production_env
from tests.factories import TenantFactory
from tests.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HASHED_CSS = re.compile(r'href="(/static/site/site\.[0-9a-f]{12}\.css)"')
HASHED_HTMX = re.compile(r'src="(/static/django_htmx/htmx[\w.-]*\.[0-9a-f]{12}\.js)"')


@pytest.fixture
def committed_tenant() -> Iterator[Tenant]:
    """A tenant the gunicorn process can see: committed, and removed again afterwards."""
    schema_drop(schema_name="statics")  # left over by an interrupted run on a kept database
    tenant = TenantFactory(name="Statics", slug="statics")
    yield tenant
    connection.set_schema_to_public()
    tenant_delete(tenant=Tenant.objects.get(pk=tenant.pk))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[str]:
    """gunicorn as the deploy files start it, on a free loopback port; yields its URL."""
    port = _free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--config",
                "deploy/gunicorn.conf.py",
                "config.wsgi:application",
            ],
            cwd=ROOT,
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(f"{url}/healthz"), timeout=30, what="gunicorn")
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return _get(url, "localhost").status == 200
    except OSError:
        return False


def _get(url: str, host: str, **headers: str):
    request = urllib.request.Request(url, headers={"Host": host, **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.body = response.read()
            return response
    except urllib.error.HTTPError as error:
        return error


def test_gunicorn_serves_hashed_static_files_cached_for_good_on_every_host(
    tmp_path, committed_tenant
):
    static_root = tmp_path / "static"
    env = {
        **production_env(),
        "DATABASE_URL": helpers.test_database_url(),
        "STATIC_ROOT": str(static_root),
    }
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr

    with gunicorn(env, tmp_path / "gunicorn.log") as url:
        for host in ("localhost", committed_tenant.primary_host):
            page = _get(f"{url}/login/", host)
            assert page.status == 200, (host, page.status)
            html = page.body.decode()
            css_path = HASHED_CSS.search(html).group(1)
            assert HASHED_HTMX.search(html), html

            css = _get(f"{url}{css_path}", host)
            assert css.status == 200
            assert css.headers["Cache-Control"] == "max-age=315360000, public, immutable"
            assert css.headers["Content-Type"].startswith("text/css")
            assert css.body == (static_root / css_path.removeprefix("/static/")).read_bytes()

        zipped = _get(f"{url}{css_path}", "localhost", **{"Accept-Encoding": "gzip"})
        unhashed = _get(f"{url}/static/site/site.css", "localhost")

    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == css.body
    # The name without a hash may change content at the next release: a short cache only.
    assert unhashed.status == 200
    assert unhashed.headers["Cache-Control"] == "max-age=60, public"
    # Production logs are JSON (LOG_FORMAT's default without DEBUG), gunicorn's own too.
    lines = (tmp_path / "gunicorn.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # any line that is no JSON fails here
    access = [entry for entry in entries if entry["logger"] == "gunicorn.access"]
    assert any('"GET /login/ HTTP/1.1" 200' in entry["message"] for entry in access), lines
    assert any(entry["logger"] == "gunicorn.error" for entry in entries), lines
