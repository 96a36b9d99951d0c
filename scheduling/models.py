"""Models stored in each tenant's schema."""

from __future__ import annotations

import uuid

from django.db import models


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
        indexes = [models.Index(fields=["status", "-started_at"], name="syncrun_status_started")]
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
