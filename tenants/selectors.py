"""Reads scoped to the tenant whose schema the connection is on, and the operator's reads
across tenants."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import QuerySet
from django.http import Http404
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from scheduling.models import SyncRun
from tenants.accounts.models import User
from tenants.models import Tenant


def tenant_user_list() -> QuerySet[User]:
    return User.objects.order_by("-role", "email")


def _tenant_users() -> QuerySet[User]:
    # The public schema's users are operators: never reachable through a tenant's pages.
    if connection.schema_name == get_public_schema_name():
        raise Http404("No tenant here.")
    return User.objects.all()


def tenant_user_get(*, public_id: uuid.UUID, actor: User) -> User:
    """A user of the current tenant, for one of its admins to manage.

    A member asking gets PermissionDenied (403); an id that is not one of this
    tenant's users (another tenant's, say) gets Http404.
    """
    if not actor.is_tenant_admin:
        raise PermissionDenied("Only tenant admins can manage users.")
    try:
        return _tenant_users().get(public_id=public_id)
    except User.DoesNotExist:
        raise Http404("No such user.") from None


def tenant_invitee_get(*, public_id: uuid.UUID) -> User | None:
    """The active user of the current tenant an invitation link names, or None."""
    return _tenant_users().filter(public_id=public_id, is_active=True).first()


def tenant_current() -> Tenant:
    """The tenant whose schema the connection is on, as a real Tenant row.

    Requests carry the row already; schema_context() and Celery tasks may carry
    only a stand-in with the schema name, so look that up.
    """
    tenant = getattr(connection, "tenant", None)
    if isinstance(tenant, Tenant):
        return tenant
    return Tenant.objects.get(schema_name=connection.schema_name)


# --- Across tenants, for the operator site ------------------------------------


@dataclass(frozen=True)
class TenantActivity:
    user_count: int
    last_sync_status: str | None  # a SyncRun.Status value; None before the first run


_SCHEMAS_READY = """
    SELECT nspname FROM pg_namespace
    WHERE nspname = ANY(%s)
      AND to_regclass(quote_ident(nspname) || '.' || quote_ident(%s)) IS NOT NULL
      AND to_regclass(quote_ident(nspname) || '.' || quote_ident(%s)) IS NOT NULL
"""


def tenant_activity_by_schema(*, schema_names: Iterable[str]) -> dict[str, TenantActivity]:
    """Users and the latest sync of each named schema, in two queries however many.

    A schema that is missing, or not yet migrated, has no entry. Meant for one
    page of a list: the second query reads every schema at once (UNION ALL).
    """
    schema_names = sorted(set(schema_names))
    if not schema_names:
        return {}
    users, runs = User._meta.db_table, SyncRun._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(_SCHEMAS_READY, [schema_names, users, runs])
        ready = sorted(row[0] for row in cursor.fetchall())
        if not ready:
            return {}
        cursor.execute(_activity_query(schemas=ready, users=users, runs=runs), ready)
        return {schema: TenantActivity(count, status) for schema, count, status in cursor}


def _activity_query(*, schemas: list[str], users: str, runs: str) -> str:
    # Identifiers quoted by psycopg; each schema's name travels as a parameter.
    part = sql.SQL(
        "SELECT %s::text, (SELECT count(*) FROM {users}),"
        " (SELECT status FROM {runs} ORDER BY started_at DESC LIMIT 1)"
    )
    query = sql.SQL(" UNION ALL ").join(
        part.format(users=sql.Identifier(schema, users), runs=sql.Identifier(schema, runs))
        for schema in schemas
    )
    connection.ensure_connection()
    return query.as_string(connection.connection)
