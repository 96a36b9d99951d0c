"""The worker's side of exactly once: claim an occurrence before running it.

A message sent by the project's scheduler carries the `occurrence` header, the key
`<periodic task id>:<slot, ISO 8601 UTC>`, and a task id derived from it. Before the
task body runs, one conditional UPDATE marks the occurrence started; only a message
that wins it runs. A copy (published again after a crash or a takeover, or delivered
twice) finds the occurrence started or finished and runs nothing. An occurrence
started by a worker that died is claimable again once its time limit and a grace
have passed, so a redelivered message still runs.

A message whose header names no recorded occurrence, or one of another tenant than
the schema it runs in, is refused: it was not sent by the scheduler for this tenant.
Messages without the header (sent by hand, or by stock beat) are not guarded.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DatabaseError, connection
from django_tenants.utils import get_public_schema_name
from tenant_schemas_celery.app import get_schema_name_from_task

from config.task_headers import task_header

logger = logging.getLogger(__name__)

OCCURRENCE_HEADER = "occurrence"
TABLE = "public.scheduling_platform_occurrence"
ERROR_LIMIT = 2000  # characters of a failure kept on the occurrence


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming: `runs` says whether the body may run."""

    runs: bool
    occurrence_id: int | None = None  # None: an unguarded message
    reason: str = ""
    duplicate: bool = False  # not run because the occurrence ran or runs already


UNGUARDED = Claim(runs=True)


def occurrence_key_parse(raw: object) -> tuple[int, datetime] | None:
    """(periodic task id, slot) of an occurrence key; None for anything else."""
    if not isinstance(raw, str) or ":" not in raw:
        return None
    task_id, _, slot = raw.partition(":")
    if not task_id.isdigit() or len(task_id) > 18:
        return None
    try:
        moment = datetime.fromisoformat(slot)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(task_id), moment.astimezone(UTC)


def occurrence_claim(task) -> Claim:
    """Claim the occurrence of the message `task` is running, if it names one."""
    raw = task_header(task.request, OCCURRENCE_HEADER)
    if raw is None:
        return UNGUARDED
    parsed = occurrence_key_parse(raw)
    if parsed is None:
        return _refused(task, f"the occurrence header {str(raw)[:100]!r} is no occurrence key")
    task_id, slot = parsed
    schema = get_schema_name_from_task(task, {}) or ""
    if schema == get_public_schema_name():
        schema = ""
    now = datetime.now(UTC)
    limit = task.time_limit or task.app.conf.task_time_limit
    from scheduling.dispatch.engine import started_live_until  # the engine imports the jobs

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {TABLE}
            SET status = 'started', started_at = %(now)s, worker = %(worker)s,
                live_until = %(live)s, finished_at = NULL, error = ''
            WHERE periodic_task_id = %(task)s AND slot_at = %(slot)s AND schema_name = %(schema)s
              AND (status = 'sent' OR (status = 'started' AND live_until < %(now)s))
            RETURNING id
            """,
            {
                "now": now,
                "worker": f"{socket.gethostname()}:{task.request.hostname or ''}"[:255],
                "live": started_live_until(limit, now),
                "task": task_id,
                "slot": slot,
                "schema": schema,
            },
        )
        row = cursor.fetchone()
        if row is not None:
            return Claim(runs=True, occurrence_id=row[0])
        cursor.execute(
            f"SELECT status, schema_name FROM {TABLE} WHERE periodic_task_id = %s AND slot_at = %s",
            [task_id, slot],
        )
        found = cursor.fetchone()
    if found is None:
        return _refused(task, f"no occurrence {raw} is recorded")
    status, owner = found
    if owner != schema:
        return _refused(task, f"occurrence {raw} belongs to schema {owner or 'public'!r}")
    logger.info(
        "Duplicate of occurrence %s (%s) not run: %s[%s]", raw, status, task.name, task.request.id
    )
    return Claim(runs=False, reason=f"the occurrence is {status}", duplicate=True)


def _refused(task, reason: str) -> Claim:
    logger.error("Refused %s[%s]: %s", task.name, task.request.id, reason)
    return Claim(runs=False, reason=reason)


def occurrence_finish(claim: Claim, *, error: BaseException | None = None) -> None:
    """Mark a claimed occurrence finished, or failed with `error`.

    A database that fails this write (the job may have failed because of it) is logged,
    not raised: the job's own outcome and error stay the task's. The occurrence then
    stays started until its time limit and grace run out, when it is claimable again.
    """
    if claim.occurrence_id is None:
        return
    try:
        _finish(claim.occurrence_id, error)
    except DatabaseError:
        logger.exception("Could not mark occurrence %s as ended", claim.occurrence_id)


def _finish(occurrence_id: int, error: BaseException | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {TABLE} SET status = %s, finished_at = %s, error = %s, live_until = NULL
            WHERE id = %s AND status = 'started'
            """,
            [
                "finished" if error is None else "failed",
                datetime.now(UTC),
                "" if error is None else f"{type(error).__name__}: {error}"[:ERROR_LIMIT],
                occurrence_id,
            ],
        )


def occurrence_release(claim: Claim) -> None:
    """Hand a claimed occurrence back (the task retries): its retry message claims it."""
    if claim.occurrence_id is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET status = 'sent' WHERE id = %s AND status = 'started'",
            [claim.occurrence_id],
        )


def occurrence_skip(task, reason: str) -> None:
    """Record that a claimable occurrence was not run on purpose (its tenant is paused)."""
    parsed = occurrence_key_parse(task_header(task.request, OCCURRENCE_HEADER))
    if parsed is None:
        return
    schema = get_schema_name_from_task(task, {}) or ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {TABLE} SET status = 'skipped', error = %s, live_until = NULL
            WHERE periodic_task_id = %s AND slot_at = %s AND schema_name = %s AND status = 'sent'
            """,
            [reason[:ERROR_LIMIT], *parsed, schema],
        )
