"""Digest times as people read them: in their own zone, with the zone's abbreviation."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils import dateformat

register = template.Library()

LOCAL_TIME_FORMAT = "D j M Y, H:i"


@register.filter
def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """ "Mon 23 Nov 2026, 08:00 CET"."""
    local = moment.astimezone(zone)
    # Django's "T" leaves the abbreviation out for a time that happens twice, the very
    # time it tells EDT from EST; the aware datetime itself knows which one it is.
    return f"{dateformat.format(local, LOCAL_TIME_FORMAT)} {local.tzname()}"
