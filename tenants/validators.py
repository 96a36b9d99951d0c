"""Small reusable validators for tenant fields."""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

from scheduling.intervals import describe_duration


@cache
def iana_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@deconstructible
class TimezoneValidator:
    """Accept only names from the IANA database, such as "Europe/Berlin"."""

    def __call__(self, value: str) -> None:
        if value not in iana_time_zones():
            raise ValidationError(
                "%(value)s is not an IANA time zone name, such as Europe/Berlin or UTC.",
                code="invalid_timezone",
                params={"value": value},
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimezoneValidator)


@deconstructible
class TenantSlugValidator:
    """A slug is the tenant's schema name and the first label of its host name."""

    pattern = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
    min_length = 3
    max_length = 40

    def __call__(self, value: str) -> None:
        if not self.min_length <= len(value) <= self.max_length:
            raise ValidationError(
                "A slug must be %(min)d to %(max)d characters long.",
                code="slug_length",
                params={"min": self.min_length, "max": self.max_length},
            )
        if not self.pattern.match(value):
            raise ValidationError(
                "A slug may hold lowercase letters, digits and single hyphens, "
                "and must start with a letter.",
                code="slug_format",
            )
        if value in settings.RESERVED_TENANT_SLUGS or value.startswith("pg-"):
            raise ValidationError(
                "%(value)s is reserved; choose another slug.",
                code="slug_reserved",
                params={"value": value},
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenantSlugValidator)


@deconstructible
class SyncIntervalValidator:
    """Keep a sync interval within TENANT_SYNC_INTERVAL_MIN and _MAX."""

    def __call__(self, value: timedelta) -> None:
        low, high = settings.TENANT_SYNC_INTERVAL_MIN, settings.TENANT_SYNC_INTERVAL_MAX
        if not low <= value <= high:
            raise ValidationError(
                "The sync interval must be between %(low)s and %(high)s.",
                code="interval_bounds",
                params={
                    "low": describe_duration(low),
                    "high": describe_duration(high),
                },
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyncIntervalValidator)
