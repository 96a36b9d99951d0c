"""Where a tenant's records come from: a JSON feed over HTTP, or the demo generator."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.dateparse import parse_datetime

from scheduling.fetch import FetchError, guarded_request


class FeedError(Exception):
    """The feed is malformed; the message says where."""


@dataclass(frozen=True)
class SourceRecord:
    external_id: str
    title: str
    url: str = ""
    updated_at: datetime | None = None
    data: dict = field(default_factory=dict)


def _record_parse(index: int, item: object) -> SourceRecord:
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise FeedError(f"{where} must be an object.")
    external_id = item.get("id")
    if isinstance(external_id, bool) or not isinstance(external_id, str | int) or external_id == "":
        raise FeedError(f"{where}.id must be a non-empty string or a number.")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise FeedError(f"{where}.title must be a non-empty string.")
    url = item.get("url") or ""
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        raise FeedError(f"{where}.url must be an http(s) URL.")
    updated_at = None
    if item.get("updated_at") is not None:
        raw = item["updated_at"]
        updated_at = parse_datetime(raw) if isinstance(raw, str) else None
        if updated_at is None or updated_at.tzinfo is None:
            raise FeedError(f"{where}.updated_at must be an ISO 8601 time with a UTC offset.")
    extra = {k: v for k, v in item.items() if k not in {"id", "title", "url", "updated_at"}}
    return SourceRecord(str(external_id)[:200], title.strip()[:500], url[:1000], updated_at, extra)


def feed_parse(body: bytes) -> list[SourceRecord]:
    """Validate a whole feed before anything is written; raise FeedError on the first problem."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"The feed is not valid JSON: {exc}.") from None
    if not isinstance(document, dict) or not isinstance(document.get("records"), list):
        raise FeedError('The feed must be a JSON object with a "records" list.')
    records = [_record_parse(i, item) for i, item in enumerate(document["records"])]
    seen: set[str] = set()
    for record in records:
        if record.external_id in seen:
            raise FeedError(f"The id {record.external_id!r} appears more than once.")
        seen.add(record.external_id)
    return records


def http_json_fetch(*, url: str, token: str = "") -> list[SourceRecord]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = guarded_request(url, headers=headers)
    if response.status != 200:
        raise FetchError(f"The source answered HTTP {response.status}.")
    return feed_parse(response.body)


def demo_records(*, run_number: int, now: datetime) -> list[SourceRecord]:
    """Five standing records, one revised and one new on every run: the demo works offline."""
    records = [
        SourceRecord(f"demo-{i}", f"Demo item {i}", f"https://example.com/items/{i}", None)
        for i in range(1, 6)
    ]
    revised = run_number % 5
    records[revised] = SourceRecord(
        records[revised].external_id,
        f"Demo item {revised + 1} (revision {run_number})",
        records[revised].url,
        now,
    )
    new_id = 6 + run_number
    records.append(
        SourceRecord(
            f"demo-{new_id}", f"New demo item {new_id}", f"https://example.com/items/{new_id}", now
        )
    )
    return records
