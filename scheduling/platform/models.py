from __future__ import annotations

from django.db import models
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
