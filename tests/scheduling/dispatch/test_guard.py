"""The worker's duplicate guard when the database fails under it."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from django.db import connection

from scheduling.dispatch import guard
from scheduling.platform.models import Occurrence

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _started() -> Occurrence:
    return Occurrence.objects.create(
        periodic_task_id=1,
        name="platform:heartbeat",
        slot_at=SLOT,
        due_at=SLOT,
        recorded_at=SLOT,
        status="started",
    )


def _kill_own_backend() -> None:
    """Terminate this connection's server process from another connection, as a
    database restart or failover does to a worker in the middle of a task."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


# The database connection is really killed, so no test transaction may wrap it.
@pytest.mark.django_db(transaction=True)
def test_a_failed_finish_is_logged_and_leaves_the_jobs_error_alone(caplog):
    occurrence = _started()
    _kill_own_backend()

    # The job failed (its error is the task's); marking it failed fails too.
    with caplog.at_level("ERROR", logger="scheduling.dispatch.guard"):
        guard.occurrence_finish(
            guard.Claim(runs=True, occurrence_id=occurrence.pk), error=ValueError("boom")
        )

    assert f"Could not mark occurrence {occurrence.pk} as ended" in caplog.text
    connection.close()  # as the worker does after a task, with a broken connection
    occurrence.refresh_from_db()
    # Still started: claimable again once its time limit and grace have passed.
    assert occurrence.status == "started" and occurrence.error == ""


@pytest.mark.django_db
def test_a_finish_on_a_live_connection_records_the_error():
    occurrence = _started()

    guard.occurrence_finish(
        guard.Claim(runs=True, occurrence_id=occurrence.pk), error=ValueError("boom")
    )

    occurrence.refresh_from_db()
    assert (occurrence.status, occurrence.error) == ("failed", "ValueError: boom")
