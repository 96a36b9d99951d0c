"""Deliveries, stored in each tenant's schema: one row per message, whatever its attempts.

Each channel has its own table, so every foreign key is required where it applies
and the database keeps each channel's "never twice" rule: one digest per user and
period, one webhook per sync run. A copy of each row's state goes to the public
DeliveryLog (notifications.platform) so operators can search across tenants.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


STATUS_VALUES = [choice.value for choice in DeliveryStatus]


class Delivery(models.Model):
    """What every channel records: the recipient, the outcome and how it was reached.

    `queued` covers the attempts still to come: a transient failure keeps the row
    queued with its `last_error` while the task waits to retry. `failed` and
    `sent` are final; `skipped` says why nothing was sent in `last_error`.
    """

    Status = DeliveryStatus
    channel: str  # set by each concrete model

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The address or URL at the time of sending; it may change later.
    recipient = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # The SMTP Message-ID we set, or the id a webhook receiver answers with.
    provider_message_id = models.CharField(max_length=255, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_settled(self) -> bool:
        return self.status != DeliveryStatus.QUEUED


class DigestDelivery(Delivery):
    """One digest for one user and one period: the guard against sending anything twice.

    `period` is the due instant the digest answers, so a second dispatch or a
    retried task for the same period finds this row and sends nothing.
    """

    channel = Channel.EMAIL

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_deliveries"
    )
    period = models.DateTimeField()
    # The changes it covers: records changed in (since, until].
    since = models.DateTimeField()
    until = models.DateTimeField()
    record_count = models.PositiveIntegerField(default=0)
    subject = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-period"]
        indexes = [models.Index(fields=["user", "-period"], name="delivery_user_period")]
        constraints = [
            models.UniqueConstraint(fields=["user", "period"], name="one_delivery_per_user_period"),
            models.CheckConstraint(
                name="delivery_status_valid", condition=models.Q(status__in=STATUS_VALUES)
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


class WebhookDelivery(Delivery):
    """One POST of a sync run's summary to the tenant's webhook, or a test POST."""

    channel = Channel.WEBHOOK

    class Kind(models.TextChoices):
        RUN = "run", "Sync run"
        TEST = "test", "Test"

    kind = models.CharField(max_length=8, choices=Kind, default=Kind.RUN)
    # Set exactly for kind "run": the run the summary describes.
    sync_run = models.ForeignKey(
        "scheduling.SyncRun",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="webhook_deliveries",
    )
    # The JSON document sent, kept so a retry sends the same bytes and signature.
    payload = models.JSONField(default=dict)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="webhookdelivery_created")]
        constraints = [
            models.UniqueConstraint(fields=["sync_run"], name="one_webhook_per_sync_run"),
            models.CheckConstraint(
                name="webhookdelivery_status_valid", condition=models.Q(status__in=STATUS_VALUES)
            ),
            models.CheckConstraint(
                name="webhookdelivery_kind_valid", condition=models.Q(kind__in=["run", "test"])
            ),
            models.CheckConstraint(
                name="webhookdelivery_run_iff_kind_run",
                condition=models.Q(kind="run", sync_run__isnull=False)
                | models.Q(kind="test", sync_run__isnull=True),
            ),
            models.CheckConstraint(
                name="webhookdelivery_sent_has_time",
                condition=~models.Q(status="sent") | models.Q(sent_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"webhook {self.kind} {self.public_id} ({self.status})"
