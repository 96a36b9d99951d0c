from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection
from django_tenants.utils import schema_context, schema_exists

from tenants.accounts.models import User
from tenants.models import Domain, Tenant
from tenants.provisioning import schema_drop
from tenants.services import tenant_create, tenant_delete, tenant_pause, tenant_resume
from tests.factories import PASSWORD, TenantFactory

pytestmark = pytest.mark.django_db


def _schema_shape(schema: str) -> dict[str, list]:
    """Tables, columns, constraints, indexes and applied migrations of a schema, name-neutral."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, "
            "regexp_replace(coalesce(column_default, ''), 'nextval\\(.*\\)', 'nextval') "
            "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            [schema],
        )
        columns = cursor.fetchall()
        cursor.execute(
            "SELECT c.conrelid::regclass::text, c.contype, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = %s",
            [schema],
        )
        constraints = sorted(
            (
                table.split(".")[-1].strip('"'),
                kind,
                definition.replace(f'"{schema}".', "").replace(f"{schema}.", ""),
            )
            for table, kind, definition in cursor.fetchall()
        )
        cursor.execute(
            "SELECT tablename, regexp_replace(indexdef, 'INDEX \\S+ ON \\S+', 'INDEX ON t') "
            "FROM pg_indexes WHERE schemaname = %s",
            [schema],
        )
        indexes = sorted(cursor.fetchall())
        cursor.execute(f'SELECT app, name FROM "{schema}".django_migrations ORDER BY 1, 2')
        migrations = cursor.fetchall()
    return {
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "migrations": migrations,
    }


def test_it_clones_the_template_into_a_working_tenant():
    created = tenant_create(
        name="Acme Corp",
        slug="acme",
        admin_email="Boss@Acme.test",
        admin_password=PASSWORD,
        timezone_name="Europe/Berlin",
    )

    assert created.method == "clone"
    assert created.generated_password is None
    assert schema_exists("acme")
    domain = Domain.objects.get(tenant=created.tenant)
    assert (domain.domain, domain.is_primary) == (f"acme.{settings.BASE_DOMAIN}", True)
    with schema_context("acme"):
        admin = User.objects.get()
        assert (admin.email, admin.role) == ("boss@acme.test", User.Role.ADMIN)
        assert admin.check_password(PASSWORD)
    assert not User.objects.filter(email="boss@acme.test").exists()  # not in public


def test_it_migrates_when_asked_and_when_the_template_is_missing():
    migrated = tenant_create(name="One", slug="one", admin_email="a@one.test", method="migrate")
    schema_drop(schema_name=settings.TENANT_TEMPLATE_SCHEMA)
    fallback = tenant_create(name="Two", slug="two", admin_email="a@two.test")

    assert (migrated.method, fallback.method) == ("migrate", "migrate")
    assert fallback.generated_password
    with schema_context("two"):
        assert User.objects.get().check_password(fallback.generated_password)


def test_explicit_clone_without_a_template_is_an_error():
    schema_drop(schema_name=settings.TENANT_TEMPLATE_SCHEMA)
    with pytest.raises(DatabaseError):
        tenant_create(name="One", slug="one", admin_email="a@one.test", method="clone")
    assert not Tenant.objects.exists()


def test_a_cloned_schema_equals_a_migrated_one():
    tenant_create(name="Cloned", slug="cloned", admin_email="a@c.test", method="clone")
    tenant_create(name="Migrated", slug="migrated", admin_email="a@m.test", method="migrate")

    cloned, migrated = _schema_shape("cloned"), _schema_shape("migrated")

    assert cloned["migrations"], "the clone carries its migration history"
    assert len(cloned["columns"]) > 30
    for part in ("columns", "constraints", "indexes", "migrations"):
        assert cloned[part] == migrated[part], part


def test_a_failure_midway_leaves_no_schema_tenant_or_domain():
    # A real database error at the domain step, after the schema has been built.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION public.refuse_domain() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'domain refused by test'; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER refuse_domain BEFORE INSERT ON public.tenants_domain "
            "FOR EACH ROW EXECUTE FUNCTION public.refuse_domain();"
        )

    with pytest.raises(DatabaseError, match="domain refused by test"):
        tenant_create(name="Doomed", slug="doomed", admin_email="a@doomed.test")

    assert not schema_exists("doomed")
    assert not Tenant.objects.filter(schema_name="doomed").exists()
    assert not Domain.objects.filter(domain__startswith="doomed.").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slug": "Acme"}, "lowercase"),
        ({"slug": "ab"}, "3 to 40"),
        ({"slug": "public"}, "reserved"),
        ({"slug": "www"}, "reserved"),
        ({"slug": "a--b"}, "single hyphens"),
        ({"timezone_name": "Mars/Olympus"}, "IANA"),
        ({"admin_email": "not-an-email"}, "valid email"),
        ({"admin_password": "123"}, "too short"),
    ],
)
def test_it_rejects_bad_input_before_writing_anything(fields, message):
    arguments = {"name": "Acme", "slug": "acme", "admin_email": "a@acme.test", **fields}

    with pytest.raises(ValidationError, match=message):
        tenant_create(**arguments)

    assert not Tenant.objects.exists()
    if arguments["slug"] not in {"public", "www"}:
        assert not schema_exists(arguments["slug"])


def test_it_rejects_an_interval_outside_the_configured_bounds(settings):
    from datetime import timedelta

    settings.TENANT_SYNC_INTERVAL_MIN = timedelta(seconds=60)
    with pytest.raises(ValidationError, match="between 1 minute and 1 week"):
        tenant_create(
            name="A", slug="acme", admin_email="a@a.test", sync_interval=timedelta(seconds=30)
        )
    with pytest.raises(ValidationError, match="between"):
        tenant_create(
            name="A", slug="acme", admin_email="a@a.test", sync_interval=timedelta(days=8)
        )
    assert not Tenant.objects.exists()


def test_duplicate_slug_and_name_are_refused():
    TenantFactory(name="Acme", slug="acme")

    with pytest.raises(ValidationError, match="slug already exists"):
        tenant_create(name="Other", slug="acme", admin_email="a@x.test")
    with pytest.raises(ValidationError, match="name already exists"):
        tenant_create(name="ACME", slug="acme2", admin_email="a@x.test")
    assert Tenant.objects.count() == 1


def test_pause_resume_and_delete():
    tenant = TenantFactory(slug="acme")

    assert tenant_pause(tenant=tenant) is True
    assert tenant_pause(tenant=tenant) is False
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.PAUSED and tenant.status_changed_at is not None
    assert tenant_resume(tenant=tenant) is True
    assert Tenant.objects.get(pk=tenant.pk).status == Tenant.Status.ACTIVE

    tenant_delete(tenant=tenant)
    assert not schema_exists("acme")
    assert not Tenant.objects.exists() and not Domain.objects.exists()
