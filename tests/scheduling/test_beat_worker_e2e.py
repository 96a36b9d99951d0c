"""End to end: beat (DueTimeScheduler, the default) and a worker, as real processes.

Three tenants sync every 2, 3 and 5 s. The test checks that each tenant's runs
land in its own schema at its own pace, that an interval saved through the
model is picked up, that pause stops the runs and delete removes the task, that
each due user gets one digest through the tenant's dispatcher, and that a task
without a tenant is refused by the worker.
"""

from __future__ import annotations

import time
from datetime import timedelta
from email import message_from_bytes
from itertools import pairwise

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from config.celery import app
from notifications.models import DigestDelivery
from scheduling import metrics
from scheduling.dispatch import occurrence_key, occurrence_task_id
from scheduling.jobs import SYNC
from scheduling.models import SyncRun
from scheduling.platform.models import Occurrence
from scheduling.services import records_upsert, user_schedule_update
from scheduling.sources import demo_records
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete, tenant_pause
from tests.processes import celery_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INTERVALS = {"e2e-two": 2, "e2e-three": 3, "e2e-five": 5}


def _runs(slug: str) -> list[SyncRun]:
    with schema_context(slug):
        return list(SyncRun.objects.order_by("started_at"))


@pytest.fixture
def e2e_tenants():
    for slug, seconds in INTERVALS.items():
        tenant_create(
            name=slug,
            slug=slug,
            admin_email=f"a@{slug}.test",
            sync_interval=timedelta(seconds=seconds),
        )
    yield
    for tenant in Tenant.objects.filter(schema_name__startswith="e2e-"):
        tenant_delete(tenant=tenant)


@pytest.fixture
def e2e_digests(e2e_tenants):
    """In e2e-five, two users whose daily digest is due now and one whose weekly one is not,
    and records that changed within the day for the digests to list. The daily hour is
    twelve hours from now, so the next period never starts while the test runs (an hourly
    one would, when the test crosses the top of an hour)."""
    now = timezone.now()
    two_days_ago = now - timedelta(days=2)
    far_hour = (now.hour + 12) % 24
    with schema_context("e2e-five"):
        records_upsert(records=demo_records(run_number=0, now=timezone.now()), now=timezone.now())
        due = [User.objects.get(email="a@e2e-five.test")]
        due.append(User.objects.create_user("due@e2e-five.test", "x-pass-1234"))
        later = User.objects.create_user("later@e2e-five.test", "x-pass-1234")
        for user in due:
            user_schedule_update(
                user=user, frequency="daily", hour=far_hour, timezone_name="UTC", now=two_days_ago
            )
        user_schedule_update(user=later, frequency="weekly", hour=9, weekday=0)
    return sorted(user.email for user in due)


def _slots_run(slug: str, runs: list[SyncRun]) -> list:
    """The nominal slots of `runs`, each found by its task id, which names its occurrence."""
    occurrences = Occurrence.objects.filter(name=f"tenant:{slug}:sync")
    by_task_id = {
        occurrence_task_id(occurrence_key(o.periodic_task_id, o.slot_at)): o.slot_at
        for o in occurrences
    }
    assert {run.task_id for run in runs} <= set(by_task_id), "a run without an occurrence"
    return sorted(by_task_id[run.task_id] for run in runs)


def _sent_mail(folder) -> list[str]:
    return sorted(message_from_bytes(path.read_bytes())["To"] for path in folder.glob("*.log"))


def test_beat_and_worker_run_each_tenant_in_its_own_schema(e2e_digests, tmp_path):
    redis.Redis.from_url(settings.REDIS.client).delete("celery")  # no stale messages
    refused_before = metrics.refused_task_count()
    mailbox = tmp_path / "mail"
    file_mail = {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mailbox),
    }

    with (
        celery_process(
            "worker",
            tmp_path / "worker.log",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
            env=file_mail,
        ),
        celery_process("beat", tmp_path / "beat.log", "--max-interval", "1"),
    ):
        # 1. Each tenant runs at its own pace, in its own schema.
        wait_until(lambda: len(_runs("e2e-five")) >= 2, timeout=30, what="two runs of e2e-five")
        time.sleep(4)
        runs = {slug: _runs(slug) for slug in INTERVALS}
        assert len(runs["e2e-two"]) > len(runs["e2e-three"]) > len(runs["e2e-five"]) >= 2
        for slug, seconds in INTERVALS.items():
            # Every run succeeded; the latest may still be going when they are read.
            statuses = [run.status for run in runs[slug]]
            assert set(statuses[:-1]) <= {"ok"} and statuses[-1] in {"ok", "running"}, statuses
            # The pace is the nominal one: each run is one slot of the tenant's grid, and
            # slots are whole intervals apart. (Start times may come closer than that: a
            # first message that waited for the worker to boot is followed by an on-time one.)
            slots = _slots_run(slug, runs[slug])
            gaps = [(b - a).total_seconds() for a, b in pairwise(slots)]
            assert gaps and all(gap >= seconds and gap % seconds == 0 for gap in gaps), (slug, gaps)
        task_ids = [{run.task_id for run in runs[slug]} for slug in INTERVALS]
        assert all(ids and "" not in ids for ids in task_ids)
        assert not set.intersection(*task_ids)

        # 2. A changed interval, saved through the model, is picked up by beat.
        five = Tenant.objects.get(schema_name="e2e-five")
        five.sync_interval = timedelta(seconds=1)
        five.save()
        changed_at = time.time()
        wait_until(
            lambda: sum(r.started_at.timestamp() > changed_at for r in _runs("e2e-five")) >= 4,
            timeout=15,
            what="e2e-five at its new 1 s interval",
        )

        # 3. Pause stops the runs; delete removes the task.
        tenant_pause(tenant=Tenant.objects.get(schema_name="e2e-two"))
        time.sleep(3)  # beat picks the change up within its 1 s tick; let in-flight runs finish
        paused_count = len(_runs("e2e-two"))
        tenant_delete(tenant=Tenant.objects.get(schema_name="e2e-three"))
        assert not PeriodicTask.objects.filter(name__startswith="tenant:e2e-three:").exists()

        # 5. A task without a tenant header (or with an unknown one) is refused by the worker.
        app.send_task(SYNC.task_name)  # sent from public: the header says "public"
        app.send_task(SYNC.task_name, headers={"_schema_name": "e2e-nobody"})
        wait_until(
            lambda: metrics.refused_task_count() >= refused_before + 2,
            timeout=15,
            what="two refused tasks",
        )

        time.sleep(4)
        assert len(_runs("e2e-two")) == paused_count
        assert PeriodicTask.objects.get(name="tenant:e2e-two:sync").enabled is False

        # 4. Each due user got one digest, through many runs of the 2 s dispatcher.
        wait_until(lambda: len(_sent_mail(mailbox)) >= 2, timeout=10, what="two digests")
        time.sleep(3)  # more dispatcher runs: none may send again
        assert _sent_mail(mailbox) == e2e_digests
        with schema_context("e2e-five"):
            deliveries = list(DigestDelivery.objects.values_list("user__email", "status"))
        assert sorted(deliveries) == [(email, "sent") for email in e2e_digests]
        assert PeriodicTask.objects.get(name="tenant:e2e-five:digests").total_run_count >= 3

    worker_log = (tmp_path / "worker.log").read_text()
    assert "Refused tenant task scheduling.sync_tenant" in worker_log
    assert "e2e-nobody" in worker_log
    assert "Traceback" not in (tmp_path / "beat.log").read_text()
