"""Models stored in each tenant's schema."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class DigestDelivery(models.Model):
    """One digest for one user and one period: the guard against sending anything twice.

    `period` is the due instant the digest answers, so a second dispatch or a
    retried task for the same period finds this row and sends nothing.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        SENT = "sent", "Sent"
        EMPTY = "empty", "Nothing changed"
        FAILED = "failed", "Failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_deliveries"
    )
    period = models.DateTimeField()
    # The changes it covers: records changed in (since, until].
    since = models.DateTimeField()
    until = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status, default=Status.PENDING)
    record_count = models.PositiveIntegerField(default=0)
    subject = models.CharField(max_length=300, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period"]
        indexes = [models.Index(fields=["user", "-period"], name="delivery_user_period")]
        constraints = [
            models.UniqueConstraint(fields=["user", "period"], name="one_delivery_per_user_period"),
            models.CheckConstraint(
                name="delivery_status_valid",
                condition=models.Q(status__in=["pending", "sent", "empty", "failed"]),
            ),
            models.CheckConstraint(
                name="delivery_window_ordered", condition=models.Q(since__lte=models.F("until"))
            ),
            models.CheckConstraint(
                name="delivery_sent_has_time",
                condition=~models.Q(status="sent") | models.Q(sent_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"digest for user {self.user_id} at {self.period:%Y-%m-%d %H:%M} ({self.status})"
