"""The beat scheduler: django-celery-beat's DatabaseScheduler, stamping each message.

Every message beat sends carries `nominal_time`, the instant its schedule said it
was due (ISO 8601, UTC). Workers subtract it from the moment they start the task
to measure dispatch lag (see scheduling.metrics), and a sync run stores it as
its nominal start. Run beat with `--scheduler scheduling.beat:NominalTimeScheduler`;
it is also CELERY_BEAT_SCHEDULER, the default.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

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
    start_time = getattr(entry.model, "start_time", None)
    if start_time is not None and nominal < start_time:
        nominal = start_time
    return nominal.astimezone(UTC)


class NominalTimeScheduler(DatabaseScheduler):
    def reserve(self, entry: ModelEntry) -> ModelEntry:
        nominal = entry_nominal_time(entry, entry.default_now())
        sent = super().reserve(entry)  # a fresh entry built from the row: its options are its own
        if nominal is not None:
            sent.options["headers"] = {
                **sent.options.get("headers", {}),
                NOMINAL_TIME_HEADER: nominal.isoformat(),
            }
        return sent
