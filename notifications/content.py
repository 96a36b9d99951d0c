"""What one digest says: the changes of its window, counted and listed in the user's zone.

Only reads here; the email itself is built from the template triplet
emails/digest-{subject.txt,body.txt,body.html} by notifications.emails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Q
from django.utils.dateformat import format as date_format

from notifications.models import DigestDelivery
from notifications.selectors import digest_changes
from scheduling.models import Record
from scheduling.recurrence import Frequency

EN_DASH = "\u2013"


@dataclass(frozen=True)
class DigestItem:
    title: str
    url: str
    changed_at: datetime
    is_new: bool


@dataclass(frozen=True)
class DigestContent:
    new_count: int
    updated_count: int
    items: list[DigestItem]
    period_label: str  # "Mon 8 Jun", "Mon 8 Jun, 08:00-09:00" or "1-8 Jun" (en dashes), local

    @property
    def total(self) -> int:
        return self.new_count + self.updated_count

    @property
    def more(self) -> int:
        """Changes counted but not listed."""
        return self.total - len(self.items)


def digest_content_build(
    *, delivery: DigestDelivery, frequency: str, zone: ZoneInfo
) -> DigestContent:
    """The changes in the delivery's window (since, until]: two counts, then the newest items.

    A record is new when it was first seen inside the window, else updated.
    """
    changes = digest_changes(since=delivery.since, until=delivery.until)
    is_new = Q(first_seen_at__gt=delivery.since)
    counts = changes.order_by().aggregate(total=Count("pk"), new=Count("pk", filter=is_new))
    records: list[Record] = list(changes[: settings.DIGEST_MAX_RECORDS])
    return DigestContent(
        new_count=counts["new"],
        updated_count=counts["total"] - counts["new"],
        items=[
            DigestItem(
                title=record.title,
                url=record.url,
                changed_at=record.changed_at,
                is_new=record.first_seen_at > delivery.since,
            )
            for record in records
        ],
        period_label=period_label(
            frequency=frequency, since=delivery.since, until=delivery.until, zone=zone
        ),
    )


def period_label(*, frequency: str, since: datetime, until: datetime, zone: ZoneInfo) -> str:
    """How a subject names the period: by its end for daily digests, its span otherwise."""
    start, end = since.astimezone(zone), until.astimezone(zone)
    if frequency == Frequency.HOURLY:
        hours = f"{date_format(start, 'H:i')}{EN_DASH}{date_format(end, 'H:i')}"
        return f"{date_format(end, 'D j M')}, {hours}"
    if frequency == Frequency.WEEKLY:
        if start.month == end.month:
            return f"{date_format(start, 'j')}{EN_DASH}{date_format(end, 'j M')}"
        return f"{date_format(start, 'j M')} {EN_DASH} {date_format(end, 'j M')}"
    return date_format(end, "D j M")
