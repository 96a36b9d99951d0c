"""/metrics: who may read it, and what tasks run through Celery (eagerly, with the same
signals a worker sends) put into it. The end-to-end run with a real worker and beat is
in test_metrics_e2e.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from config.celery import app
from config.env import redis_urls
from notifications.models import WebhookDelivery
from notifications.tasks import send_webhook
from notifications.webhooks import webhook_settings_update
from scheduling import metrics
from scheduling.beat import NOMINAL_TIME_HEADER
from scheduling.models import SyncRun
from scheduling.platform.tasks import beat_heartbeat, cleanup_runs
from scheduling.services import sync_run
from scheduling.tasks import sync_tenant
from tenants.accounts.models import User
from tenants.services import tenant_pause
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD
from tests.feeds import FeedServer
from tests.notifications.webhook_receiver import Receiver
from tests.scheduling.metrics_scrape import TOKEN, metrics_clean, scrape

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_metrics():
    with metrics_clean():
        yield


@pytest.fixture
def feeds(tenant_a, tenant_b):
    """acme's source answers a record, globex's answers HTTP 500."""
    good, bad = FeedServer(), FeedServer()
    good.body = json.dumps({"records": [{"id": 1, "title": "One"}]}).encode()
    bad.status = 500
    for tenant, feed in ((tenant_a, good), (tenant_b, bad)):
        tenant.source_kind, tenant.source_url = "http_json", feed.url
        tenant.save()
    yield
    good.close()
    bad.close()


@pytest.fixture
def metrics_redis_down(monkeypatch):
    """The metrics Redis refuses connections (nothing listens on port 1); the broker is fine.
    Yields the real Redis settings."""
    monkeypatch.setattr(metrics._recording, "paused_until", 0.0)
    monkeypatch.setattr(metrics._recording, "failing", False)
    real = settings.REDIS
    metrics._client.cache_clear()
    with override_settings(REDIS=redis_urls("redis://127.0.0.1:1/0")):
        yield real
    metrics._client.cache_clear()


def _sync(schema: str, **headers):
    return sync_tenant.apply(headers={"_schema_name": schema, **headers})


# --- Who may read it ------------------------------------------------------------


def test_without_credentials_or_with_a_wrong_token_it_is_401():
    client = site_client()

    anonymous = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")

    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert b"scheduler_" not in anonymous.content + wrong.content


def test_the_token_gets_the_prometheus_text_format():
    response = site_client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    assert b"# HELP scheduler_job_runs_total Job runs by tenant" in response.content


def test_prometheus_asking_for_openmetrics_gets_it():
    response = site_client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


def test_a_signed_in_operator_may_read_it(operator_client):
    assert operator_client.get("/metrics").status_code == 200


def test_signed_in_users_who_are_no_operators_are_refused():
    staff = User.objects.create_user("staff@platform.test", PASSWORD, is_staff=True)
    plain = User.objects.create_user("plain@platform.test", PASSWORD)
    answers = []
    for user in (staff, plain):
        client = site_client()
        client.force_login(user)
        answers.append(client.get("/metrics"))

    assert [answer.status_code for answer in answers] == [403, 403]
    assert all(b"scheduler_" not in answer.content for answer in answers)


def test_a_tenant_host_has_no_metrics_even_with_the_token(tenant_a, admin_a):
    with_token = site_client(tenant_a).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    tenant_admin = logged_in(tenant_a, admin_a).get("/metrics")

    assert with_token.status_code == tenant_admin.status_code == 404


def test_only_get_is_answered():
    response = site_client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405


def test_it_is_503_when_redis_does_not_answer(metrics_redis_down):
    response = site_client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 503
    assert response.content == b"Metrics unavailable: Redis did not answer (ConnectionError).\n"


# --- What tasks record ------------------------------------------------------------


def test_syncs_count_their_runs_outcome_under_their_own_tenant_only(
    feeds, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # counted once committed
        assert _sync("acme").successful() and _sync("acme").successful()
        assert _sync("globex").successful()  # the task ran; its SyncRun failed
    with schema_context("acme"):
        last_ok = SyncRun.objects.latest("finished_at").finished_at

    result = scrape()

    assert result.runs(kind="sync") == {("acme", "sync", "ok"): 2, ("globex", "sync", "failed"): 1}
    assert result.labelled("scheduler_sync_last_success_timestamp_seconds") == {
        frozenset({("tenant", "acme")}): pytest.approx(last_ok.timestamp(), abs=1e-3)
    }


def test_refused_and_skipped_tasks_are_counted_as_such(tenant_a, tenant_b):
    sync_tenant.apply()  # from public: no tenant
    _sync("no-such-tenant")
    tenant_pause(tenant=tenant_b)
    _sync("globex")

    result = scrape()

    assert result.runs() == {("", "sync", "refused"): 2, ("globex", "sync", "skipped"): 1}
    assert result.value("scheduler_tasks_refused_without_tenant_total") == 2


def test_a_retried_task_counts_the_retry_and_then_its_success(tenant_a):
    with Receiver(500, 200) as receiver:
        webhook_settings_update(tenant=tenant_a, url=receiver.url)
        receiver.secret = tenant_a.webhook_secret
        with schema_context("acme"):
            delivery = WebhookDelivery.objects.get(sync_run=sync_run(tenant=tenant_a))
        send_webhook.apply(args=[str(delivery.public_id)], headers={"_schema_name": "acme"})

    assert scrape().runs(kind="webhook_send") == {
        ("acme", "webhook_send", "retried"): 1,
        ("acme", "webhook_send", "ok"): 1,
    }


@override_settings(RUN_HISTORY_DAYS="not a number")
def test_a_task_that_raises_counts_as_failed():
    assert cleanup_runs.apply().failed()

    assert scrape().runs() == {("", "cleanup", "failed"): 1}


def test_the_dispatch_lag_of_a_stamped_first_delivery_lands_in_its_bucket(time_machine, caplog):
    time_machine.move_to(NOW, tick=False)
    stamped = {NOMINAL_TIME_HEADER: (NOW - timedelta(seconds=2.5)).isoformat()}

    beat_heartbeat.apply(headers=stamped)
    beat_heartbeat.apply(headers=stamped, retries=1)  # a retry starts late on purpose
    beat_heartbeat.apply()  # not sent by beat
    beat_heartbeat.apply(headers={NOMINAL_TIME_HEADER: "yesterday"})
    result = scrape()

    assert result.value("scheduler_dispatch_lag_seconds_count", kind="heartbeat") == 1
    assert result.value("scheduler_dispatch_lag_seconds_sum", kind="heartbeat") == 2.5
    buckets = {
        dict(labels)["le"]: value
        for labels, value in result.labelled("scheduler_dispatch_lag_seconds_bucket").items()
    }
    assert buckets["1.0"] == 0 and buckets["2.5"] == 1 and buckets["+Inf"] == 1
    assert list(buckets)[:2] == ["0.05", "0.1"] and "900.0" in buckets
    assert "Ignored the nominal_time header 'yesterday'" in caplog.text


def test_the_heartbeat_age_is_a_gauge_and_absent_before_the_first_heartbeat(time_machine):
    time_machine.move_to(NOW, tick=False)
    never = scrape()
    metrics._client().set(metrics.HEARTBEAT_KEY, (NOW - timedelta(seconds=42)).isoformat())

    assert "scheduler_beat_heartbeat_age_seconds" in never.families
    assert never.labelled("scheduler_beat_heartbeat_age_seconds") == {}
    assert scrape().value("scheduler_beat_heartbeat_age_seconds") == 42


def test_the_queue_depth_covers_a_queue_only_a_periodic_task_names():
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(
        name="reports", task="scheduling.reconcile", interval=every, queue="reports"
    )
    broker = redis.Redis.from_url(settings.REDIS.client)
    broker.delete("reports")
    for _ in range(2):
        app.send_task("scheduling.reconcile", queue="reports")
    waiting = broker.llen("reports")

    depth = scrape().labelled("scheduler_queue_depth_messages")

    broker.delete("reports")
    assert depth[frozenset({("queue", "reports")})] == waiting == 2
    assert frozenset({("queue", "celery")}) in depth


def test_a_deleted_tenants_series_are_gone_and_other_tenants_keep_theirs(tenant_a):
    for tenant in ("acme", "gone"):
        metrics.sync_run_record(tenant=tenant, status="ok", finished_at=NOW)
        metrics.job_run_record(tenant=tenant, kind="digests", status="ok")

    result = scrape()

    assert result.runs() == {("acme", "sync", "ok"): 1, ("acme", "digests", "ok"): 1}
    assert set(result.labelled("scheduler_sync_last_success_timestamp_seconds")) == {
        frozenset({("tenant", "acme")})
    }


# --- A Redis outage ---------------------------------------------------------------


def test_tasks_run_on_when_the_metrics_cannot_be_written_and_it_is_logged_once(
    tenant_a, metrics_redis_down, caplog
):
    first = _sync("acme", **{NOMINAL_TIME_HEADER: datetime.now(UTC).isoformat()})
    second = _sync("acme")
    refused = sync_tenant.apply()

    assert first.successful() and second.successful() and refused.successful()
    with schema_context("acme"):
        assert list(SyncRun.objects.values_list("status", flat=True)) == ["ok", "ok"]
    outage_lines = [r for r in caplog.records if "Metrics are not recorded" in r.getMessage()]
    assert len(outage_lines) == 1
    assert "ConnectionError" in outage_lines[0].getMessage()


def test_recording_resumes_after_the_pause_once_redis_answers(
    tenant_a, metrics_redis_down, monkeypatch, caplog
):
    metrics.job_run_record(tenant="acme", kind="digests", status="ok")  # lost
    assert metrics._recording.failing

    metrics._client.cache_clear()
    with override_settings(REDIS=metrics_redis_down):
        metrics.job_run_record(tenant="acme", kind="digests", status="ok")  # still paused
        monkeypatch.setattr(metrics._recording, "paused_until", 0.0)  # the pause is over
        metrics.job_run_record(tenant="acme", kind="digests", status="ok")
        result = scrape()

    assert result.runs() == {("acme", "digests", "ok"): 1}
    assert "Metrics are recorded again." in caplog.text
