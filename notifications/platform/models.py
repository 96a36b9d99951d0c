"""The operators' view of deliveries: one public row per tenant delivery, kept in step.

The tenant's own DigestDelivery or WebhookDelivery is the truth and holds the
uniqueness rules; notifications.delivery writes this copy in the same
transaction as each change, so a search across tenants never opens every schema.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Collate, Upper

from notifications.models import STATUS_VALUES, Channel, DeliveryStatus


class DeliveryLog(models.Model):
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="delivery_logs", db_index=False
    )
    delivery_public_id = models.UUIDField(unique=True, help_text="The tenant delivery's public id.")
    channel = models.CharField(max_length=16, choices=Channel)
    # What the delivery is about: "digest", "sync run" or "test".
    topic = models.CharField(max_length=16)
    recipient = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "delivery"
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["-created_at"], name="deliverylog_created"),
            models.Index(fields=["tenant", "-created_at"], name="deliverylog_tenant_created"),
            # The admin's search (notifications.platform.admin): an address or URL in any
            # letter case, whole or its beginning. In the "C" collation a btree also
            # serves LIKE 'PREFIX%', whatever the database's own collation is.
            models.Index(Collate(Upper("recipient"), "C"), name="deliverylog_recipient"),
            # ... a provider's message id, found in a bounce or a receiver's log; most
            # rows that have none (skipped, failed) stay out of the index.
            models.Index(
                fields=["provider_message_id"],
                condition=~models.Q(provider_message_id=""),
                name="deliverylog_provider_id",
            ),
            # The status filter's useful case: what failed lately, newest first.
            models.Index(
                fields=["-created_at"],
                condition=models.Q(status="failed"),
                name="deliverylog_failed_created",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                name="deliverylog_status_valid", condition=models.Q(status__in=STATUS_VALUES)
            ),
            models.CheckConstraint(
                name="deliverylog_channel_valid",
                condition=models.Q(channel__in=[choice.value for choice in Channel]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient} ({self.status})"
