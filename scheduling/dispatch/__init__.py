"""The building blocks of the project's own beat scheduler (issue 7).

Plain modules, not a Django app, each usable and tested on its own:
  timing   when a schedule is due: catch-up, coalesce, jitter (no database);
  lease    the leader lease with a fencing epoch (PostgreSQL);
  publish  many Celery messages at once, as a stock worker reads them (Redis or kombu).

Each (schedule, nominal time) is one occurrence, named by a key. Its Celery task id
is derived from that key, so a message published again after a crash carries the
same id, and the worker can recognise it and run nothing twice.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

# Its beat scheduler class, as CELERY_BEAT_SCHEDULER and `celery beat -S` name it.
DUE_TIME_SCHEDULER = "scheduling.dispatch.scheduler:DueTimeScheduler"

# Fixed for good: changing it changes every occurrence's task id, so a message
# published before the change would no longer be recognised after it.
OCCURRENCE_NAMESPACE = uuid.UUID("6c6be2da-3c25-401d-bd77-0ea895eb463e")
_NAMESPACE_BYTES = OCCURRENCE_NAMESPACE.bytes


def occurrence_key(periodic_task_id: int, nominal_at: datetime) -> str:
    """The key of one occurrence: `<periodic task id>:<nominal time, ISO 8601 UTC>`.

    Nominal times are whole seconds; microseconds are dropped, so the key of a slot
    is the same whichever process computed it. A naive time is refused: its instant
    would depend on the zone of the machine.
    """
    if nominal_at.tzinfo is None or nominal_at.utcoffset() is None:
        raise ValueError(f"nominal_at must be an aware datetime, got {nominal_at!r}")
    return f"{periodic_task_id}:{nominal_at.astimezone(UTC).replace(microsecond=0).isoformat()}"


def occurrence_task_id(key: str) -> str:
    """The Celery task id of the occurrence `key`: the same key always gives the same id."""
    # uuid.uuid5, without building a UUID object: the scheduler makes one per message.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
