"""Every job kind's time limits and expiry: on every task, on every message that beat or a
service sends, and under a broker visibility timeout that outlasts them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)
from django_celery_beat.schedulers import ModelEntry
from django_tenants.utils import schema_context

from config.celery import app
from notifications.delivery import GIVE_UP_AFTER, retry_countdown
from notifications.webhooks import webhook_settings_update, webhook_test_send
from scheduling.beat import NOMINAL_TIME_HEADER, NominalTimeScheduler
from scheduling.jobs import (
    CLEANUP,
    DIGEST_SEND,
    JOBS,
    SYNC,
    WEBHOOK_SEND,
    Job,
    TenantJob,
)
from scheduling.platform.services import periodic_task_run_now
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tests.processes import celery_process, wait_until
from tests.settings_probe import base_setting

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
QUEUE = "limits-test"


@pytest.fixture
def broker():
    """Redis, with the queues the tests read emptied before and after."""
    client = redis.Redis.from_url(settings.REDIS.client)
    client.delete(QUEUE, "celery")
    yield client
    client.delete(QUEUE, "celery")


def _queued(broker, queue: str = QUEUE) -> dict:
    [raw] = broker.lrange(queue, 0, -1)
    return json.loads(raw)["headers"]


# --- Tasks ------------------------------------------------------------------


def test_every_project_task_is_a_job_kind_with_its_limits_and_expiry():
    app.loader.import_default_modules()
    ours = {name for name in app.tasks if name.split(".")[0] in {"scheduling", "notifications"}}

    assert ours == set(JOBS)
    for job in JOBS.values():
        task = app.tasks[job.task_name]
        assert (task.soft_time_limit, task.time_limit, task.expires) == (
            job.soft_time_limit,
            job.time_limit,
            job.expires,
        ), job.kind


def test_a_task_of_no_registered_kind_cannot_be_declared():
    with pytest.raises(ImproperlyConfigured, match=r"scheduling\.rogue is not a job kind"):
        type("Rogue", (TenantJob,), {"name": "scheduling.rogue"})


@pytest.mark.parametrize(("soft", "hard"), [(60, 60), (90, 60), (0, 60), (200, 301)])
def test_a_job_kind_needs_a_soft_limit_below_its_hard_one_within_the_cap(soft, hard):
    with pytest.raises(ImproperlyConfigured, match=r"CELERY_TASK_TIME_LIMIT \(300 s\)"):
        Job("x", "scheduling.x", "tenant", "X", soft_time_limit=soft, time_limit=hard, expires=60)


def test_a_delivery_message_outlives_all_its_retries_and_the_delivery_itself():
    retries = settings.NOTIFY_MAX_RETRIES
    for job in (DIGEST_SEND, WEBHOOK_SEND):
        waits = sum(retry_countdown(attempt) for attempt in range(retries))
        assert job.expires >= waits + (retries + 1) * job.time_limit, job.kind
        assert job.expires == GIVE_UP_AFTER.total_seconds(), job.kind


# --- Settings ---------------------------------------------------------------


def test_a_visibility_timeout_shorter_than_a_retry_wait_and_a_run_is_refused():
    result = base_setting("CELERY_BROKER_TRANSPORT_OPTIONS", {"CELERY_VISIBILITY_TIMEOUT": "1200"})

    assert result.returncode != 0
    assert (
        "CELERY_VISIBILITY_TIMEOUT must exceed NOTIFY_RETRY_MAX + the longest task time limit "
        "(900 + 300 s), got 1200"
    ) in result.stderr


def test_the_visibility_timeout_follows_the_retry_wait_it_must_outlast():
    shorter_retries = {"NOTIFY_RETRY_MAX": "600", "CELERY_VISIBILITY_TIMEOUT": "901"}
    default = base_setting("CELERY_BROKER_TRANSPORT_OPTIONS", {"NOTIFY_RETRY_MAX": "600"})

    assert base_setting("CELERY_VISIBILITY_TIMEOUT", shorter_retries).stdout.strip() == "901"
    assert default.stdout.strip() == "{'visibility_timeout': 1200}"


# --- What beat sends --------------------------------------------------------


def _reserved(time_machine, task: str = SYNC.task_name, **schedule) -> ModelEntry:
    row = PeriodicTask.objects.create(
        name="limits-test",
        task=task,
        headers='{"_schema_name": "acme"}',
        last_run_at=NOW - timedelta(hours=1),
        **schedule,
    )
    time_machine.move_to(NOW, tick=False)
    entry = ModelEntry(row, app=app)
    scheduler = NominalTimeScheduler(app=app, lazy=True)
    scheduler._finalize.cancel()  # its exit-time sync would run after the test database is gone
    following = scheduler.reserve(entry)
    assert following.options["expires"] == entry.options["expires"]
    return entry  # what beat's tick sends once it has reserved it


@pytest.mark.django_db
def test_a_beat_message_expires_when_its_interval_sends_the_next_one(time_machine):
    every = IntervalSchedule.objects.create(every=90, period="seconds")

    assert _reserved(time_machine, interval=every).options["expires"] == 90


@pytest.mark.django_db
def test_a_crontab_message_expires_at_the_crontabs_next_firing(time_machine):
    nightly = CrontabSchedule.objects.create(minute="15", hour="3", timezone="UTC")

    sent = _reserved(time_machine, task=CLEANUP.task_name, crontab=nightly)

    next_firing = datetime(2026, 6, 2, 3, 15, tzinfo=UTC)
    assert sent.options["expires"] == (next_firing - NOW).total_seconds()


@pytest.mark.django_db
def test_a_clocked_message_has_no_next_one_and_takes_its_kinds_expiry(time_machine):
    once = ClockedSchedule.objects.create(clocked_time=NOW - timedelta(seconds=1))

    sent = _reserved(time_machine, clocked=once, one_off=True)

    assert sent.options["expires"] == SYNC.expires


@pytest.mark.django_db
def test_a_rows_own_expiry_wins(time_machine):
    every = IntervalSchedule.objects.create(every=90, period="seconds")

    assert _reserved(time_machine, interval=every, expire_seconds=30).options["expires"] == 30


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_beat_sends_a_tenants_sync_expiring_with_its_interval(broker, tmp_path):
    slug = "e2e-expiry"
    tenant_create(
        name=slug, slug=slug, admin_email=f"a@{slug}.test", sync_interval=timedelta(seconds=5)
    )
    try:
        with celery_process("beat", tmp_path / "beat.log", "--max-interval", "1"):
            wait_until(lambda: broker.llen("celery"), timeout=30, what="beat's first message")
    finally:
        tenant_delete(tenant=Tenant.objects.get(schema_name=slug))

    headers = next(
        message["headers"]
        for message in map(json.loads, broker.lrange("celery", 0, -1))
        if message["headers"]["periodic_task_name"] == f"tenant:{slug}:sync"
    )
    sent_after_due = datetime.fromisoformat(headers["expires"]) - datetime.fromisoformat(
        headers[NOMINAL_TIME_HEADER]
    )
    # Five seconds after it was sent, which is at or a little after it was due; not the
    # 15 minutes a sync sent by hand would get.
    assert timedelta(seconds=5) <= sent_after_due < timedelta(seconds=60)


# --- What services send -----------------------------------------------------


def _expires_in(headers: dict) -> float:
    return (datetime.fromisoformat(headers["expires"]) - NOW).total_seconds()


@pytest.mark.django_db
def test_run_now_expires_with_the_job_kind_unless_the_row_says(tenant_a, broker, time_machine):
    time_machine.move_to(NOW, tick=False)
    task = PeriodicTask.objects.get(name="tenant:acme:sync")
    task.queue = QUEUE
    task.save()

    periodic_task_run_now(task=task)
    assert _expires_in(_queued(broker)) == SYNC.expires

    broker.delete(QUEUE)
    task.expire_seconds = 120
    periodic_task_run_now(task=task)
    assert _expires_in(_queued(broker)) == 120


@pytest.mark.django_db
def test_a_queued_delivery_expires_with_its_job_kind(
    tenant_a, broker, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(NOW, tick=False)
    webhook_settings_update(tenant=tenant_a, url="http://127.0.0.1:9/hook")

    with schema_context("acme"), django_capture_on_commit_callbacks(execute=True):
        webhook_test_send(tenant=tenant_a)

    headers = _queued(broker, "celery")
    assert (headers["task"], headers["_schema_name"]) == (WEBHOOK_SEND.task_name, "acme")
    assert _expires_in(headers) == WEBHOOK_SEND.expires
