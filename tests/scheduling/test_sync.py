from __future__ import annotations

import json

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from scheduling import metrics
from scheduling.fetch import FetchError, guarded_request
from scheduling.models import Record, SyncRun
from scheduling.services import sync_run
from scheduling.tasks import sync_tenant
from tests.feeds import FeedServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def feed():
    server = FeedServer()
    yield server
    server.close()


def _use_feed(tenant, feed, token=""):
    tenant.source_kind, tenant.source_url, tenant.source_token = "http_json", feed.url, token
    tenant.save()


def _counts(run: SyncRun) -> tuple:
    return (run.status, run.created_count, run.updated_count, run.unchanged_count)


def test_the_demo_source_creates_then_changes_records(tenant_a, tenant_b):
    with schema_context("acme"):
        first = sync_run(tenant=tenant_a, task_id="t-1")
        second = sync_run(tenant=tenant_a)

        assert _counts(first) == ("ok", 6, 0, 0)
        assert _counts(second) == ("ok", 1, 2, 3)
        assert Record.objects.count() == 7
        assert first.task_id == "t-1" and first.finished_at >= first.started_at
    with schema_context("globex"):
        assert not Record.objects.exists()


def test_an_http_feed_is_upserted_by_external_id_with_the_bearer_token(tenant_a, feed):
    _use_feed(tenant_a, feed, token="s3cret")
    feed.body = json.dumps(
        {
            "records": [
                {
                    "id": 1,
                    "title": "One",
                    "url": "https://x.test/1",
                    "updated_at": "2026-01-01T10:00:00Z",
                },
                {"id": "two", "title": "Two", "extra": {"k": 1}},
            ]
        }
    ).encode()

    with schema_context("acme"):
        assert _counts(sync_run(tenant=tenant_a)) == ("ok", 2, 0, 0)
        feed.body = json.dumps(
            {
                "records": [
                    {"id": 1, "title": "One!"},
                    {"id": "two", "title": "Two", "extra": {"k": 1}},
                ]
            }
        ).encode()
        assert _counts(sync_run(tenant=tenant_a)) == ("ok", 0, 1, 1)
        assert Record.objects.get(external_id="1").title == "One!"
        assert Record.objects.get(external_id="two").data == {"extra": {"k": 1}}
    assert feed.requests[0]["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'{"items": []}', '"records" list'),
        (b'{"records": [{"id": 1, "title": "ok"}, {"title": "no id"}]}', "records[1].id"),
        (
            b'{"records": [{"id": 1, "title": "x", "updated_at": "yesterday"}]}',
            "records[0].updated_at",
        ),
        (b'{"records": [{"id": 1, "title": "x"}, {"id": 1, "title": "y"}]}', "more than once"),
        (b'{"records": [{"id": 1, "title": "x", "url": "javascript:alert(1)"}]}', "records[0].url"),
    ],
)
def test_a_malformed_feed_fails_the_run_and_changes_no_record(tenant_a, feed, body, message):
    _use_feed(tenant_a, feed)
    with schema_context("acme"):
        feed.body = b'{"records": [{"id": 1, "title": "Kept"}]}'
        sync_run(tenant=tenant_a)
        feed.body = body

        run = sync_run(tenant=tenant_a)

        assert run.status == "failed" and message in run.error
        assert list(Record.objects.values_list("external_id", "title")) == [("1", "Kept")]


def test_an_error_status_fails_the_run(tenant_a, feed):
    _use_feed(tenant_a, feed)
    feed.status = 503
    with schema_context("acme"):
        run = sync_run(tenant=tenant_a)
    assert (run.status, run.error) == ("failed", "The source answered HTTP 503.")


@override_settings(SYNC_FETCH_MAX_BYTES=1024)
def test_a_feed_over_the_size_limit_is_refused(tenant_a, feed):
    _use_feed(tenant_a, feed)
    feed.body = json.dumps({"records": [{"id": i, "title": "x" * 50} for i in range(50)]}).encode()
    with schema_context("acme"):
        run = sync_run(tenant=tenant_a)
        assert run.status == "failed" and "larger than the limit" in run.error
        assert not Record.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/feed",
        "http://169.254.169.254/latest",
        "http://192.168.0.1/",
        "http://[::1]:9/",
        "http://[::ffff:10.0.0.1]/",
        "http://127.0.0.1:9/",
    ],
)
@override_settings(SYNC_FETCH_ALLOW_LOOPBACK=False)
def test_private_loopback_and_link_local_targets_are_refused(url):
    with pytest.raises(FetchError, match="private or local address; refused"):
        guarded_request(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "http:///nohost"])
def test_only_http_and_https_are_fetched(url):
    with pytest.raises(FetchError, match="Only http:// and https://"):
        guarded_request(url)


def test_a_sync_task_without_a_tenant_is_refused_and_counted(tenant_a):
    before = metrics.refused_task_count()

    sync_tenant.apply()  # from the public schema: the header says "public"
    sync_tenant.apply(headers={"_schema_name": "no-such-tenant"})

    assert metrics.refused_task_count() == before + 2
    with schema_context("acme"):
        assert not SyncRun.objects.exists()


def test_a_sync_task_with_the_header_runs_in_that_schema_only(tenant_a, tenant_b):
    result = sync_tenant.apply(headers={"_schema_name": "globex"})

    assert result.successful()
    with schema_context("globex"):
        assert SyncRun.objects.get().task_id == result.id
    with schema_context("acme"):
        assert not SyncRun.objects.exists()


def test_a_task_for_a_paused_tenant_is_skipped(tenant_a, caplog):
    from tenants.services import tenant_pause

    tenant_pause(tenant=tenant_a)
    with caplog.at_level("INFO", logger="scheduling.jobs"):
        result = sync_tenant.apply(headers={"_schema_name": "acme"})

    assert result.successful()
    assert "acme is paused" in caplog.text
    with schema_context("acme"):
        assert not SyncRun.objects.exists()


def test_an_occurrence_sent_to_a_paused_tenant_is_recorded_skipped(tenant_a, tenant_b):
    from datetime import UTC, datetime

    from scheduling.dispatch import occurrence_key
    from scheduling.platform.models import Occurrence
    from tenants.services import tenant_pause

    task = tenant_a.task_links.get(kind="sync").periodic_task
    slot = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    fields = {"name": task.name, "slot_at": slot, "due_at": slot, "recorded_at": slot}
    mine = Occurrence.objects.create(
        periodic_task_id=task.pk, schema_name="acme", status="sent", **fields
    )
    tenant_pause(tenant=tenant_a)
    key = occurrence_key(task.pk, slot)

    # Another tenant's header naming acme's occurrence changes nothing: it isn't theirs.
    tenant_pause(tenant=tenant_b)
    sync_tenant.apply(headers={"_schema_name": "globex", "occurrence": key})
    mine.refresh_from_db()
    assert mine.status == "sent"

    sync_tenant.apply(headers={"_schema_name": "acme", "occurrence": key})
    mine.refresh_from_db()
    assert (mine.status, mine.error) == ("skipped", "acme is paused")
