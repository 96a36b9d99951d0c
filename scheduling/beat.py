"""The beat scheduler: django-celery-beat's DatabaseScheduler, stamping each message.

Every message beat sends carries `nominal_time`, the instant its schedule said it
was due (ISO 8601, UTC). Workers subtract it from the moment they start the task
to measure dispatch lag (see scheduling.metrics), and a sync run stores it as
its nominal start. Unless its row sets an expiry, a message also expires when its
schedule sends the next one (entry_expires).

The default scheduler is now the project's own (scheduling.dispatch.scheduler,
CELERY_BEAT_SCHEDULER), which writes the same header. This one stays for running
the stock scheduler on purpose, `--scheduler scheduling.beat:NominalTimeScheduler`,
and as the stock side of `bench_beat`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from config.task_headers import task_header
from scheduling.jobs import job_for_task

logger = logging.getLogger(__name__)

NOMINAL_TIME_HEADER = "nominal_time"


def entry_nominal_time(entry: ModelEntry, now: datetime) -> datetime | None:
    """When `entry` fell due: its schedule's next time after its last run, never before start."""
    try:
        remaining = entry.schedule.remaining_estimate(entry.last_run_at)
    except Exception:  # a schedule that cannot say (a broken row) sends without the stamp
        logger.warning("No nominal time for %s", entry.name, exc_info=True)
        return None
    nominal = now + remaining
    start_time = entry.model.start_time
    if start_time is not None and nominal < start_time:
        # Beat holds the row until then: an interval until start_time itself, a crontab
        # until its first firing after it (PeriodicTask.due_start_time, as beat reckons).
        nominal = entry.model.due_start_time(UTC)
    return nominal.astimezone(UTC)


def entry_expires(entry: ModelEntry, now: datetime) -> float | None:
    """Seconds the message `entry` sends at `now` stays worth starting: until its schedule
    sends the next one, which supersedes it. A schedule with no next time (a clocked row)
    uses its job kind's expiry; None for a task that is no registered job."""
    job = job_for_task(entry.task)
    if job is None:
        return None
    try:
        until_next = entry.schedule.remaining_estimate(now).total_seconds()
    except Exception:  # as for the nominal time: a broken row still sends
        until_next = 0
    return until_next if until_next > 0 else job.expires


def nominal_time_from_request(request: Any) -> datetime | None:
    """The `nominal_time` header of a task's request as an aware datetime; None when the
    message has none (not sent by beat) or one that is no ISO 8601 time with an offset."""
    raw = task_header(request, NOMINAL_TIME_HEADER)
    if raw is None:
        return None
    try:
        nominal = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        nominal = None
    if nominal is None or nominal.tzinfo is None:
        logger.warning("Ignored the %s header %r of task %s", NOMINAL_TIME_HEADER, raw, request.id)
        return None
    return nominal


class NominalTimeScheduler(DatabaseScheduler):
    def reserve(self, entry: ModelEntry) -> ModelEntry:
        now = entry.default_now()
        nominal = entry_nominal_time(entry, now)
        following = super().reserve(entry)  # a fresh entry built from the row, advanced
        # Celery's tick sends `entry` itself once it is reserved, apply_async(advance=True)
        # sends the entry returned: both carry this occurrence's stamps (each entry has its
        # own options), and the next reserve stamps `following` anew before it is sent.
        for sent in (entry, following):
            if not entry.model.expires_:  # the row's own expires or expire_seconds wins
                sent.options["expires"] = entry_expires(following, now)
            if nominal is not None:
                sent.options["headers"] = {
                    **sent.options.get("headers", {}),
                    NOMINAL_TIME_HEADER: nominal.isoformat(),
                }
        return following
