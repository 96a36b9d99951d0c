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
