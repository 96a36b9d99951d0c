from __future__ import annotations

from datetime import datetime

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now
from django_celery_beat.models import PeriodicTask


class TenantTask(models.Model):
    """Which tenant a django-celery-beat PeriodicTask belongs to, and what kind of job it is."""

    class Kind(models.TextChoices):
        SYNC = "sync", "Sync"
        DIGESTS = "digests", "Digest dispatcher"

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="task_links"
    )
    periodic_task = models.OneToOneField(
        PeriodicTask, on_delete=models.CASCADE, related_name="tenant_link"
    )
    kind = models.CharField(max_length=16, choices=Kind)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind"], name="one_task_per_tenant_and_kind"),
            models.CheckConstraint(
                name="tenant_task_kind_valid", condition=models.Q(kind__in=["sync", "digests"])
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.kind}"


class SyncFailure(models.Model):
    """A failed sync run, copied to the public schema so operators see failures across tenants.

    Runs live in each tenant's schema; this row is written by scheduling.services.sync_run
    in the same transaction as the run's failed status, and goes with its tenant.
    """

    # No index of its own: syncfailure_tenant_started starts with the tenant.
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="sync_failures", db_index=False
    )
    run_public_id = models.UUIDField(unique=True, help_text="The SyncRun's public id.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name_plural = "run overview"
        indexes = [
            # Failures since T, newest first; the tenant is included for an index-only count.
            models.Index(fields=["-started_at"], include=["tenant"], name="syncfailure_started"),
            # One tenant's failures, newest first: its latest error, its list.
            models.Index(fields=["tenant", "-started_at"], name="syncfailure_tenant_started"),
        ]
        constraints = [
            models.CheckConstraint(
                name="syncfailure_finished_after_start",
                condition=models.Q(finished_at__gte=models.F("started_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} failed at {self.started_at:%Y-%m-%d %H:%M:%S}"


class SchedulerLease(models.Model):
    """Which scheduler process leads, and until when (scheduling.dispatch.lease).

    Written only by that module's SQL, which takes every time from the database
    clock, so scheduler machines whose clocks disagree still agree on expiry.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(
        max_length=255, blank=True, help_text="host:pid:random of the holder; blank once released."
    )
    epoch = models.BigIntegerField(
        default=0, help_text="The fencing token: raised by one on every acquisition."
    )
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="schedulerlease_expires_after_renewal",
                condition=models.Q(expires_at__gte=models.F("renewed_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} epoch {self.epoch} held by {self.holder or 'nobody'}"


# --- The project's own beat scheduler (scheduling.dispatch) -----------------------


class ScheduleState(models.Model):
    """The due-time index: one row per PeriodicTask, with its policies.

    The PeriodicTask stays the definition (admin, services and seeds edit it); this row
    holds what the scheduler owes it: the next slot and when to send it (`due_at`, the
    slot plus the schedule's jitter offset), and the last slot it dealt with. Only the
    scheduler writes the due fields; the policy fields are edited in the admin and
    through scheduling.platform.services, and a trigger reports their changes.

    No database constraint ties it to its PeriodicTask, and deleting the task leaves
    it to the scheduler: a delete of a million tasks then costs no cascade, and the
    scheduler drops the row when it picks up the delete.
    """

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip while the previous one runs"
        BUFFER_ONE = "buffer_one", "Buffer one until the previous one ends"
        ALLOW_ALL = "allow_all", "Allow all"

    periodic_task = models.OneToOneField(
        PeriodicTask,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        primary_key=True,
        related_name="dispatch_state",
    )
    first_seen_at = models.DateTimeField(
        help_text="When the scheduler first saw the task: an interval without a start time "
        "counts from here."
    )
    active = models.BooleanField(
        default=False, help_text="Enabled and schedulable when last read by the scheduler."
    )
    timing = models.CharField(
        max_length=64, blank=True, help_text="Fingerprint of the timing last read."
    )
    next_slot_at = models.DateTimeField(null=True, blank=True, help_text="The next slot.")
    due_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next slot is sent: the slot plus the jitter."
    )
    last_slot_at = models.DateTimeField(
        null=True, blank=True, help_text="The latest slot dealt with (sent, skipped or missed)."
    )
    overlap = models.CharField(max_length=16, choices=Overlap, default=Overlap.SKIP)
    catchup_window = models.PositiveIntegerField(
        default=3600,
        help_text="Seconds. After downtime, slots older than this are recorded as missed.",
    )
    run_all = models.BooleanField(
        default=False,
        help_text="Run every slot inside the catch-up window, not only the latest.",
    )
    jitter = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Bound of the jitter in seconds; empty for the default "
        "(SCHEDULER_TENANT_JITTER for tenant tasks, none for platform tasks).",
    )
    pause_note = models.TextField(blank=True, help_text="Why the task is paused.")
    paused_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "schedule policy"
        indexes = [
            models.Index(
                fields=["due_at"],
                name="schedulestate_due",
                condition=models.Q(due_at__isnull=False),
            )
        ]
        constraints = [
            models.CheckConstraint(
                name="schedulestate_overlap_valid",
                condition=models.Q(overlap__in=["skip", "buffer_one", "allow_all"]),
            ),
        ]

    def __str__(self) -> str:
        return f"schedule state of task {self.periodic_task_id}"


class ScheduleChange(models.Model):
    """A PeriodicTask whose definition or policy changed, not yet read by the scheduler.

    Written by database triggers (migration scheduling_platform 0004), so every way of
    changing a row is caught: the admin, the services, bulk updates, raw SQL. The
    scheduler reads the oldest rows and deletes them in the transaction that applies
    them; a change committed late, out of id order, is still there on the next read.
    """

    id = models.BigAutoField(primary_key=True)
    periodic_task_id = models.BigIntegerField()
    changed_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"task {self.periodic_task_id} changed at {self.changed_at}"


class Occurrence(models.Model):
    """One slot of one schedule, and what became of it.

    Recorded by the scheduler in the transaction that moves the schedule's due time
    past the slot, then published; marked started and finished by the worker
    (scheduling.dispatch.guard). A run of missed slots is one row, `slots` long.
    """

    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        BUFFERED = "buffered", "Buffered"
        SKIPPED = "skipped", "Skipped (still running)"
        MISSED = "missed", "Missed (downtime)"
        STARTED = "started", "Started"
        FINISHED = "finished", "Ran"
        FAILED = "failed", "Failed"

    id = models.BigAutoField(primary_key=True)
    periodic_task_id = models.BigIntegerField()
    name = models.CharField(max_length=200, help_text="The periodic task's name then.")
    schema_name = models.CharField(
        max_length=63, blank=True, help_text="The tenant's schema; blank for a platform task."
    )
    slot_at = models.DateTimeField(help_text="The nominal slot (the first, for missed slots).")
    due_at = models.DateTimeField(help_text="The slot plus the jitter: the nominal_time header.")
    slots = models.PositiveIntegerField(default=1, help_text="How many slots this row stands for.")
    last_slot_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status)
    recorded_at = models.DateTimeField()
    batch = models.BigIntegerField(null=True, blank=True, help_text="The publish batch.")
    live_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Until when a sent or started occurrence counts as running.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]  # along occurrence_recorded
        indexes = [
            # The overlap policy: is a task's previous occurrence still running? And after a
            # takeover, what the previous leader recorded as sent but may not have published.
            models.Index(
                fields=["periodic_task_id"],
                name="occurrence_inflight",
                condition=models.Q(status__in=["sent", "started", "buffered"]),
            ),
            models.Index(fields=["-recorded_at"], name="occurrence_recorded"),
            # Each tick: the buffered slots waiting for their task to be free (few, if any).
            models.Index(
                fields=["slot_at"],
                name="occurrence_buffered",
                condition=models.Q(status="buffered"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["periodic_task_id", "slot_at"], name="occurrence_one_per_slot"
            ),
            models.CheckConstraint(
                name="occurrence_status_valid",
                condition=models.Q(
                    status__in=[
                        "sent",
                        "buffered",
                        "skipped",
                        "missed",
                        "started",
                        "finished",
                        "failed",
                    ]
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.slot_at:%Y-%m-%d %H:%M:%S}: {self.status}"

    EXPIRED = "Expired (never started)"
    EXPIRED_OUTCOME = "expired"  # a filter value beside the statuses

    @classmethod
    def outcome_choices(cls) -> list[tuple[str, str]]:
        """The outcomes a history can be filtered by: each status, and expired."""
        return [*cls.Status.choices, (cls.EXPIRED_OUTCOME, cls.EXPIRED)]

    @classmethod
    def outcome_filter(cls, outcome: str, now: datetime) -> models.Q:
        """The rows of one outcome; "sent" leaves the expired ones out, as they are shown."""
        sent = models.Q(status=cls.Status.SENT)
        expired = sent & models.Q(live_until__lte=now)
        if outcome == cls.EXPIRED_OUTCOME:
            return expired
        if outcome == cls.Status.SENT:
            return sent & ~models.Q(live_until__lte=now)
        return models.Q(status=outcome)

    def expired(self, now: datetime) -> bool:
        """Sent, and no worker started it before its message expired (when the next slot
        was due): the message is dropped unrun, and nothing will change this row again."""
        return (
            self.status == self.Status.SENT
            and self.live_until is not None
            and self.live_until <= now
        )

    def outcome(self, now: datetime) -> str:
        """The status as people read it: an expired message is told apart from one that
        may still run."""
        return self.EXPIRED if self.expired(now) else self.get_status_display()


class DispatchProgress(models.Model):
    """How far the leading scheduler's publishing is confirmed: every occurrence of a
    batch up to `published_batch` reached the broker. A new leader publishes again what
    was recorded in later batches and is still `sent` (scheduling.dispatch.engine)."""

    name = models.CharField(max_length=64, primary_key=True)
    published_batch = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: published through batch {self.published_batch}"


class PendingRuns(models.Model):
    """Sends not yet added to their PeriodicTasks' `last_run_at` and `total_run_count`.

    Stock beat keeps those two columns for the admin; updating a hundred thousand task rows
    as they are sent costs a third of a herd's database time (each update rewrites the row
    and its seven indexes). So the dispatcher appends one row here per batch, in the
    transaction that records the batch's occurrences, and folds these rows into the task
    rows when it is idle (scheduling.dispatch.engine). A crash loses nothing and counts
    nothing twice: a row is deleted in the transaction that adds it to the tasks.
    """

    id = models.BigAutoField(primary_key=True)
    task_ids = ArrayField(models.IntegerField(), help_text="PeriodicTask ids.")
    runs = ArrayField(models.IntegerField(), help_text="Slots sent, per task id.")
    sent_at = models.DateTimeField(help_text="When they were sent: the new last_run_at.")

    def __str__(self) -> str:
        return f"{sum(self.runs)} runs of {len(self.task_ids)} tasks sent at {self.sent_at}"
