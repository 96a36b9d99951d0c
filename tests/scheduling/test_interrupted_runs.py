"""Runs a dead worker left "running": failed when their message comes back, or by the
tenant's next sync or the cleanup job's sweep once no worker can still be at them;
and the nominal time beat stamped, stored with the run when it is one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_tenants.utils import schema_context

from scheduling.models import SyncRun
from scheduling.platform.models import SyncFailure
from scheduling.platform.tasks import cleanup_runs
from scheduling.services import RUN_ABANDONED, RUN_ABANDONED_AFTER, RUN_REDELIVERED
from scheduling.tasks import sync_tenant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _running(schema: str, *, task_id: str = "", started: datetime = NOW) -> SyncRun:
    with schema_context(schema):
        return SyncRun.objects.create(task_id=task_id, started_at=started)


def _runs(schema: str, **filters) -> list[tuple[str, str]]:
    with schema_context(schema):
        return list(
            SyncRun.objects.filter(**filters).order_by("started_at").values_list("status", "error")
        )


def _sync(task_id: str, schema: str = "acme", **headers):
    return sync_tenant.apply(task_id=task_id, headers={"_schema_name": schema, **headers})


def test_a_redelivered_sync_fails_the_run_its_dead_worker_left_running(
    tenant_a, tenant_b, time_machine
):
    time_machine.move_to(NOW + timedelta(seconds=30), tick=False)
    _running("acme", task_id="t-1", started=NOW)
    _running("acme", task_id="t-other", started=NOW)
    _running("globex", task_id="t-1", started=NOW)  # another tenant's run is none of acme's

    assert _sync("t-1").successful()

    assert _runs("acme", task_id="t-1") == [("failed", RUN_REDELIVERED), ("ok", "")]
    assert _runs("acme", task_id="t-other") == [("running", "")]
    assert _runs("globex") == [("running", "")]
    [failure] = SyncFailure.objects.all()
    assert (failure.tenant, failure.error) == (tenant_a, RUN_REDELIVERED)


def test_the_next_sync_fails_its_tenants_runs_no_worker_can_still_be_at(
    tenant_a, tenant_b, time_machine
):
    # The dead worker's message expired before Redis handed it out again: no redelivery.
    time_machine.move_to(NOW, tick=False)
    _running("acme", task_id="t-lost", started=NOW - RUN_ABANDONED_AFTER - timedelta(seconds=1))
    _running("acme", task_id="t-busy", started=NOW - timedelta(seconds=10))  # still at it
    _running("globex", task_id="t-lost", started=NOW - RUN_ABANDONED_AFTER * 2)

    assert _sync("t-next").successful()

    assert _runs("acme", task_id="t-lost") == [("failed", RUN_ABANDONED)]
    assert _runs("acme", task_id="t-busy") == [("running", "")]
    assert _runs("acme", task_id="t-next") == [("ok", "")]
    assert _runs("globex") == [("running", "")]  # globex's own sync, or the sweep, ends it
    [failure] = SyncFailure.objects.all()
    assert (failure.tenant, failure.error) == (tenant_a, RUN_ABANDONED)


def test_a_sync_stores_the_nominal_time_beat_stamped(tenant_a):
    _sync("t-1", nominal_time="2026-06-01T11:59:30+00:00")

    with schema_context("acme"):
        run = SyncRun.objects.get()
    assert run.nominal_start == datetime(2026, 6, 1, 11, 59, 30, tzinfo=UTC)


@pytest.mark.parametrize("garbage", ["yesterday", "2026-06-01T11:59:30", 1780315170, ["x"]])
def test_a_nominal_time_that_is_no_aware_iso_time_is_ignored(tenant_a, garbage, caplog):
    assert _sync("t-1", nominal_time=garbage).successful()

    with schema_context("acme"):
        run = SyncRun.objects.get()
    assert (run.status, run.nominal_start) == ("ok", None)
    assert f"Ignored the nominal_time header {garbage!r} of task t-1" in caplog.text


def test_the_cleanup_job_fails_the_runs_no_worker_can_still_be_at(tenant_a, tenant_b, time_machine):
    time_machine.move_to(NOW, tick=False)
    lost = NOW - RUN_ABANDONED_AFTER - timedelta(seconds=1)
    _running("acme", started=lost)
    _running("acme", started=NOW - RUN_ABANDONED_AFTER + timedelta(seconds=1))
    _running("globex", started=lost)
    with schema_context("acme"):
        earlier = lost - timedelta(minutes=1)
        SyncRun.objects.create(started_at=earlier, finished_at=earlier, status="ok")

    cleanup_runs.apply()
    cleanup_runs.apply()  # the next night finds nothing more to fail

    assert _runs("acme") == [("ok", ""), ("failed", RUN_ABANDONED), ("running", "")]
    assert _runs("globex") == [("failed", RUN_ABANDONED)]
    assert sorted(SyncFailure.objects.values_list("tenant__schema_name", "error")) == [
        ("acme", RUN_ABANDONED),
        ("globex", RUN_ABANDONED),
    ]
