"""Failed sign-ins are counted per account and per address; past a limit, sign-in stops.

Counters live in the shared cache (Redis), whose keys django-tenants prefixes
with the schema, so each tenant's site counts its own accounts. A fixed
window keeps it to one INCR per failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


@dataclass(frozen=True)
class LoginThrottle:
    email: str
    address: str

    @property
    def _keys(self) -> dict[str, int]:
        # Typed input is hashed: any length or character makes a safe key.
        account = hashlib.sha256(self.email.strip().lower().encode()).hexdigest()
        return {
            f"login-failures:account:{account}": settings.LOGIN_FAILURES_PER_ACCOUNT,
            f"login-failures:address:{self.address}": settings.LOGIN_FAILURES_PER_ADDRESS,
        }

    def blocked(self) -> bool:
        counts = cache.get_many(list(self._keys))
        return any(counts.get(key, 0) >= limit for key, limit in self._keys.items())

    def failure_record(self) -> None:
        for key in self._keys:
            cache.add(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW)  # starts the window
            cache.incr(key)

    def success_record(self) -> None:
        # The address keeps its count: one good password must not reset a spray.
        cache.delete(next(iter(self._keys)))
