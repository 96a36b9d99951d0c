"""The project's celery beat scheduler, DueTimeScheduler:

    celery -A config beat -S scheduling.dispatch.scheduler:DueTimeScheduler


It keeps no schedule in memory. Each tick asks the database for what is due
(scheduling.dispatch.engine) under a leader lease (scheduling.dispatch.lease), so any
number of beat processes may run: one sends, the others stand by and take over
within the lease's ttl when it dies. django-celery-beat's PeriodicTask rows stay the
definitions; the admin, the services and the seeds edit them as before, and
database triggers tell the scheduler what changed.

Stopping: SIGTERM and SIGINT are held while a tick runs, so a batch is recorded and
published, or left for the next leader to publish again, never cut in half. A tick
is bounded (engine.TICK_BUDGET), the handler then releases the lease, and beat exits.
"""

from __future__ import annotations

import logging

from celery.beat import Scheduler
from django.conf import settings
from django.db import DatabaseError, connection

from scheduling.dispatch.engine import Dispatcher
from scheduling.dispatch.lease import LeaderLease, LeaseLost
from scheduling.dispatch.publish import signals_held

logger = logging.getLogger(__name__)

ERROR_PAUSE = 1.0  # seconds before trying again after a database error


class DueTimeScheduler(Scheduler):
    #: The longest sleep between ticks: a change is picked up within it.
    max_idle = 0.25

    def __init__(self, *args, **kwargs) -> None:
        self.lease: LeaderLease | None = None
        self.dispatcher: Dispatcher | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self.lease = LeaderLease(
            settings.SCHEDULER_LEASE_NAME, ttl=settings.SCHEDULER_LEASE_TTL
        ).start()
        self.dispatcher = Dispatcher(self.lease)
        state = "leads" if self.lease.is_leader() else "stands by"
        logger.info("Scheduler %s %s (lease %s)", self.lease.holder, state, self.lease.name)

    def tick(self, *args, **kwargs) -> float:
        if self.lease is None or self.dispatcher is None:
            return ERROR_PAUSE
        if not self.lease.is_leader():
            return self.lease.poll
        with signals_held():
            try:
                report = self.dispatcher.tick()
            except LeaseLost:
                logger.warning("Scheduler %s lost the lease; standing by", self.lease.holder)
                return self.lease.poll
            except DatabaseError:
                logger.exception("Scheduler tick failed on the database; retrying")
                connection.close()
                return ERROR_PAUSE
        if report.sent or report.missed or report.skipped or report.republished:
            logger.debug(
                "tick: sent %s, skipped %s, missed %s, buffered %s, republished %s, changes %s",
                report.sent,
                report.skipped,
                report.missed,
                report.buffered,
                report.republished,
                report.picked_up,
            )
        if report.unpublished:
            logger.warning("%s messages not published; trying again", report.unpublished)
            return ERROR_PAUSE
        if report.backlog:
            return 0.0
        try:
            until = self.dispatcher.next_due_in()
        except DatabaseError:
            connection.close()
            return ERROR_PAUSE
        return self.max_idle if until is None else min(until, self.max_idle)

    def sync(self) -> None:
        """Nothing to write: every tick commits what it did."""

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.lease is not None:
            self.lease.stop()
            self.lease = None
        connection.close()

    @property
    def schedule(self) -> dict:
        return {}  # the schedule lives in the database, never in memory

    @property
    def info(self) -> str:
        if self.lease is None:
            return "    . lease: stopped"
        return f"    . lease: {self.lease.name} as {self.lease.holder}"
