from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse
from django_tenants.models import DomainMixin, TenantMixin

from tenants.validators import SyncIntervalValidator, TenantSlugValidator, TimezoneValidator


def default_sync_interval() -> timedelta:
    return settings.TENANT_SYNC_INTERVAL_DEFAULT


class Tenant(TenantMixin):
    """A customer. Its slug is its PostgreSQL schema and its host name's first label."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    # Schemas are created by tenants.services.tenant_create, never as a side effect of save().
    auto_create_schema = False
    auto_drop_schema = False

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    schema_name = models.CharField(
        "slug",
        max_length=40,
        unique=True,
        validators=[TenantSlugValidator()],
        error_messages={"unique": "A tenant with this slug already exists."},
    )
    timezone = models.CharField(max_length=64, default="UTC", validators=[TimezoneValidator()])
    sync_interval = models.DurationField(
        default=default_sync_interval, validators=[SyncIntervalValidator()]
    )

    class SourceKind(models.TextChoices):
        DEMO = "demo", "Built-in demo generator"
        HTTP_JSON = "http_json", "JSON over HTTP"

    source_kind = models.CharField(max_length=16, choices=SourceKind, default=SourceKind.DEMO)
    source_url = models.URLField(
        blank=True, max_length=500, validators=[URLValidator(schemes=["http", "https"])]
    )
    # Write-only in every form: never rendered back to anyone.
    source_token = models.CharField(blank=True, max_length=500)
    # After each sync run a signed JSON summary is POSTed here (notifications.webhooks).
    webhook_url = models.URLField(
        blank=True, max_length=500, validators=[URLValidator(schemes=["http", "https"])]
    )
    # The HMAC-SHA256 key of the webhook's signature; the tenant admin rotates it.
    webhook_secret = models.CharField(blank=True, max_length=100)
    # Set by a permanent delivery failure (a 4xx, a refused address), cleared by a success.
    webhook_failing_since = models.DateTimeField(null=True, blank=True)
    webhook_failure = models.CharField(blank=True, max_length=500)
    status = models.CharField(max_length=16, choices=Status, default=Status.ACTIVE)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        # The operator's tenant list pages through every tenant by name.
        indexes = [models.Index(fields=["name"], name="tenant_name")]
        constraints = [
            models.CheckConstraint(
                name="tenant_status_valid", condition=models.Q(status__in=["active", "paused"])
            ),
            # The settings narrow this further; the database keeps out the absurd.
            models.CheckConstraint(
                name="tenant_sync_interval_sane",
                condition=models.Q(sync_interval__gte=timedelta(seconds=1))
                & models.Q(sync_interval__lte=timedelta(days=366)),
            ),
            models.CheckConstraint(
                name="tenant_http_source_has_url",
                condition=~models.Q(source_kind="http_json") | ~models.Q(source_url=""),
                violation_error_message="A JSON-over-HTTP source needs a URL.",
            ),
            models.UniqueConstraint(
                Lower("name"),
                name="tenant_name_unique_ci",
                violation_error_message="A tenant with this name already exists.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def slug(self) -> str:
        return self.schema_name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def primary_host(self) -> str:
        return f"{self.schema_name}.{settings.BASE_DOMAIN}"

    @property
    def site_url(self) -> str:
        port = f":{settings.SITE_PORT}" if settings.SITE_PORT else ""
        return f"{settings.SITE_SCHEME}://{self.primary_host}{port}/"

    def url_for(self, name: str, **kwargs) -> str:
        """The absolute URL of a tenant site page, from settings and never a request's Host."""
        return self.site_url.rstrip("/") + reverse(
            name, urlconf=settings.ROOT_URLCONF, kwargs=kwargs
        )


class Domain(DomainMixin):
    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain
