"""The platform's own jobs, run eagerly through Celery as a worker would run them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling import metrics
from scheduling.models import SyncRun
from scheduling.platform.maintenance import run_history_cleanup
from scheduling.platform.tasks import beat_heartbeat, cleanup_runs, reconcile

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def no_heartbeat():
    metrics._client().delete(metrics.HEARTBEAT_KEY)
    yield
    metrics._client().delete(metrics.HEARTBEAT_KEY)


def _run(started: datetime, status: str = SyncRun.Status.OK) -> SyncRun:
    return SyncRun.objects.create(started_at=started, finished_at=started, status=status)


def _runs_by_age(schema: str) -> list[int]:
    with schema_context(schema):
        return sorted((NOW - run.started_at).days for run in SyncRun.objects.all())


def test_the_heartbeat_records_when_it_ran(no_heartbeat, time_machine):
    time_machine.move_to(NOW, tick=False)
    assert metrics.beat_heartbeat_last() is None

    result = beat_heartbeat.apply()

    assert result.successful()
    assert metrics.beat_heartbeat_last() == NOW


@override_settings(RUN_HISTORY_DAYS=30)
def test_cleanup_deletes_only_old_runs_in_every_tenant_schema(tenant_a, tenant_b, time_machine):
    time_machine.move_to(NOW, tick=False)
    with schema_context("acme"):
        _run(NOW - timedelta(days=31))
        _run(NOW - timedelta(days=45), status=SyncRun.Status.FAILED)
        _run(NOW - timedelta(days=29))
    with schema_context("globex"):
        _run(NOW - timedelta(days=200))
        _run(NOW - timedelta(days=1))
        _run(NOW - timedelta(days=2))

    result = cleanup_runs.apply()

    assert result.get() == {"acme": 2, "globex": 1}
    assert _runs_by_age("acme") == [29]
    assert _runs_by_age("globex") == [1, 2]


def test_a_platform_job_sent_from_a_tenant_schema_still_covers_every_tenant(
    tenant_a, tenant_b, time_machine
):
    time_machine.move_to(NOW, tick=False)
    with schema_context("globex"):
        _run(NOW - timedelta(days=400))
        # apply() stamps the current schema into the headers, as a task sent from here would be.
        result = cleanup_runs.apply()

    assert result.get() == {"acme": 0, "globex": 1}
    assert _runs_by_age("globex") == []


def test_cleanup_keeps_a_run_exactly_at_the_cutoff(tenant_a):
    with schema_context("acme"):
        _run(NOW - timedelta(days=7))

    assert run_history_cleanup(older_than=timedelta(days=7), now=NOW) == {"acme": 0}
    assert run_history_cleanup(older_than=timedelta(days=6), now=NOW) == {"acme": 1}


def test_the_reconcile_job_repairs_drift(tenant_a, tenant_b):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(enabled=False, headers="{}")
    PeriodicTask.objects.filter(name="tenant:globex:sync").delete()

    changes = reconcile.apply().get()

    assert "updated tenant:acme:sync (enabled, headers)" in changes
    assert "created tenant:globex:sync" in changes
    acme = PeriodicTask.objects.get(name="tenant:acme:sync")
    assert acme.enabled and json.loads(acme.headers) == {"_schema_name": "acme"}
    assert PeriodicTask.objects.get(name="tenant:globex:sync").tenant_link.tenant == tenant_b
    assert reconcile.apply().get() == []


def test_cleanup_deletes_old_occurrences_but_keeps_recent_and_in_flight_ones(monkeypatch):
    from scheduling.platform import maintenance
    from scheduling.platform.models import Occurrence

    monkeypatch.setattr(maintenance, "OCCURRENCE_DELETE_CHUNK", 2)  # several chunks
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    def occurrence(slot, status, live_until=None):
        return Occurrence.objects.create(
            periodic_task_id=1,
            name="tenant:acme:sync",
            slot_at=slot,
            due_at=slot,
            recorded_at=slot,
            status=status,
            live_until=live_until,
        )

    gone = [occurrence(old - timedelta(minutes=i), "finished") for i in range(5)]
    # Sent, its message expired unstarted long ago: no longer in flight.
    gone.append(occurrence(old - timedelta(hours=2), "sent", live_until=old))
    kept = [
        occurrence(recent, "missed"),
        occurrence(old - timedelta(hours=1), "started", live_until=now + timedelta(minutes=5)),
        occurrence(old - timedelta(hours=3), "buffered"),
    ]

    result = cleanup_runs.apply()

    assert result.successful()
    assert set(Occurrence.objects.values_list("pk", flat=True)) == {o.pk for o in kept}
    assert not Occurrence.objects.filter(pk__in=[o.pk for o in gone]).exists()
