"""Models stored in each tenant's schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from scheduling.recurrence import Frequency, next_due
from tenants.validators import TimezoneValidator


class Record(models.Model):
    """One item synced from the tenant's source, keyed by the source's own id."""

    external_id = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=500)
    url = models.URLField(max_length=1000, blank=True)
    source_updated_at = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    changed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return self.title


class SyncRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    task_id = models.CharField(max_length=255, blank=True)
    nominal_start = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.RUNNING)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["status", "-started_at"], name="syncrun_status_started"),
            models.Index(fields=["-started_at"], name="syncrun_started"),  # the latest run
        ]
        constraints = [
            models.CheckConstraint(
                name="syncrun_status_valid",
                condition=models.Q(status__in=["running", "ok", "failed"]),
            ),
            models.CheckConstraint(
                name="syncrun_finished_after_start",
                condition=models.Q(finished_at__isnull=True)
                | models.Q(finished_at__gte=models.F("started_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration(self):
        return self.finished_at - self.started_at if self.finished_at else None


class UserSchedule(models.Model):
    """How often one user gets something; for now only the digest of what changed.

    `next_due_at` is derived by scheduling.services.user_schedule_update from
    the rule below and kept in UTC; it is NULL exactly while nothing is due, so
    the dispatcher's partial index holds only live schedules.
    """

    class Kind(models.TextChoices):
        DIGEST = "digest", "Digest"

    class Frequency(models.TextChoices):
        OFF = Frequency.OFF, "Off"
        HOURLY = Frequency.HOURLY, "Every hour"
        DAILY = Frequency.DAILY, "Every day"
        WEEKLY = Frequency.WEEKLY, "Every week"

    class Weekday(models.IntegerChoices):
        MONDAY = 0
        TUESDAY = 1
        WEDNESDAY = 2
        THURSDAY = 3
        FRIDAY = 4
        SATURDAY = 5
        SUNDAY = 6

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules"
    )
    kind = models.CharField(max_length=16, choices=Kind, default=Kind.DIGEST)
    frequency = models.CharField(max_length=16, choices=Frequency, default=Frequency.OFF)
    hour = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(23)]
    )
    weekday = models.PositiveSmallIntegerField(null=True, blank=True, choices=Weekday)
    timezone = models.CharField(max_length=64, validators=[TimezoneValidator()])
    enabled = models.BooleanField(default=True)
    # When nothing changed in a period: False skips the digest, True sends a "nothing new" note.
    send_when_empty = models.BooleanField(default=False)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    next_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user_id", "kind"]
        indexes = [
            # The dispatcher's query: live schedules whose time has come.
            models.Index(
                fields=["next_due_at"],
                name="userschedule_due",
                condition=models.Q(next_due_at__isnull=False),
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind"],
                name="one_schedule_per_user_and_kind",
                violation_error_message="This user already has a schedule of this kind.",
            ),
            models.CheckConstraint(
                name="userschedule_kind_valid", condition=models.Q(kind__in=["digest"])
            ),
            models.CheckConstraint(
                name="userschedule_frequency_valid",
                condition=models.Q(frequency__in=[choice.value for choice in Frequency]),
            ),
            models.CheckConstraint(
                name="userschedule_hour_in_day",
                condition=models.Q(hour__isnull=True) | models.Q(hour__gte=0, hour__lte=23),
                violation_error_message="The hour must be from 0 to 23.",
            ),
            models.CheckConstraint(
                name="userschedule_weekday_in_week",
                condition=models.Q(weekday__isnull=True) | models.Q(weekday__gte=0, weekday__lte=6),
                violation_error_message="The weekday must be from 0 (Monday) to 6 (Sunday).",
            ),
            models.CheckConstraint(
                name="userschedule_daily_has_hour",
                condition=~models.Q(frequency__in=["daily", "weekly"])
                | models.Q(hour__isnull=False),
                violation_error_message="A daily or weekly digest needs an hour.",
            ),
            models.CheckConstraint(
                name="userschedule_weekly_has_weekday",
                condition=~models.Q(frequency="weekly") | models.Q(weekday__isnull=False),
                violation_error_message="A weekly digest needs a weekday.",
            ),
            models.CheckConstraint(
                name="userschedule_due_only_when_live",
                condition=(models.Q(enabled=True) & ~models.Q(frequency="off"))
                | models.Q(next_due_at__isnull=True),
                violation_error_message="A schedule that is off has no due time.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.user_id}: {self.describe()}"

    @property
    def is_live(self) -> bool:
        return self.enabled and self.frequency != self.Frequency.OFF

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_due_after(self, moment: datetime) -> datetime | None:
        """The first due instant after `moment`, in UTC, or None while the schedule is off."""
        if not self.is_live:
            return None
        return next_due(
            frequency=self.frequency,
            after=moment,
            zone=self.zone,
            hour=self.hour,
            weekday=self.weekday,
        )

    def describe(self) -> str:
        if not self.enabled:
            return "paused"
        if self.frequency == self.Frequency.OFF:
            return "off"
        if self.frequency == self.Frequency.HOURLY:
            return "every hour"
        at = f"{self.hour:02d}:00 ({self.timezone})"
        if self.frequency == self.Frequency.DAILY:
            return f"every day at {at}"
        return f"every {self.Weekday(self.weekday).label} at {at}"
