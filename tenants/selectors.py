"""Reads scoped to the tenant whose schema the connection is on."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.accounts.models import User


def tenant_user_list() -> QuerySet[User]:
    return User.objects.order_by("-role", "email")
