"""Creating a tenant's PostgreSQL schema: cloned from a migrated template, or migrated.

Cloning copies the template schema's tables, indexes, sequences and rows
(django_migrations, content types, permissions) in one SQL call, which is
several times faster than running every migration. The template is created
and migrated by every `manage.py migrate` (tenants/management/commands/migrate.py),
so a clone is always at the same migration state as the tenants migrated with it.
"""

from __future__ import annotations

import logging
from typing import Literal

from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django_tenants.clone import CloneSchema
from django_tenants.utils import quote_schema_name, schema_exists

logger = logging.getLogger(__name__)

Method = Literal["auto", "clone", "migrate"]


def template_schema_name() -> str:
    return settings.TENANT_TEMPLATE_SCHEMA


def template_schema_ensure(*, verbosity: int = 0) -> None:
    """Create the template schema if missing, migrate it, and install the clone function."""
    name = template_schema_name()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema_name(name)}")
    call_command(
        "migrate_schemas", tenant=True, schema_name=name, interactive=False, verbosity=verbosity
    )
    connection.set_schema_to_public()
    CloneSchema()._create_clone_schema_function()


def _clone_function_installed() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.proname = 'clone_schema'"
        )
        return cursor.fetchone() is not None


def _schema_clone(*, source: str, target: str) -> None:
    connection.set_schema_to_public()
    if not _clone_function_installed():
        CloneSchema()._create_clone_schema_function()
    with connection.cursor() as cursor:
        cursor.execute("SELECT public.clone_schema(%s, %s, 'DATA')", [source, target])


def _schema_migrate(*, name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {quote_schema_name(name)}")
    call_command("migrate_schemas", tenant=True, schema_name=name, interactive=False, verbosity=0)
    connection.set_schema_to_public()


def tenant_schema_provision(*, schema_name: str, method: Method = "auto") -> str:
    """Create `schema_name` and return how: "clone" or "migrate".

    "auto" clones when the template exists and falls back to migrations when it
    does not, or when cloning fails; the failed clone is rolled back first.
    """
    template = template_schema_name()
    if method != "migrate" and schema_exists(template):
        try:
            with transaction.atomic():
                _schema_clone(source=template, target=schema_name)
            return "clone"
        except DatabaseError:
            if method == "clone":
                raise
            logger.warning("Cloning %s failed; migrating it instead.", schema_name, exc_info=True)
    elif method == "clone":
        raise DatabaseError(
            f"Template schema {template!r} does not exist; run `manage.py migrate`."
        )
    _schema_migrate(name=schema_name)
    return "migrate"


def schema_drop(*, schema_name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote_schema_name(schema_name)} CASCADE")
