"""factory-boy factories. Tenants are built through the onboarding service, never raw."""

from __future__ import annotations

import factory
from django.db import connection
from django.utils import timezone

from scheduling.models import Record
from tenants.accounts.models import User
from tenants.services import tenant_create

PASSWORD = "correct-horse-battery"


class TenantFactory(factory.Factory):
    class Meta:
        model = dict  # built by tenant_create, see _create

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant{n:03d}")
    admin_email = factory.LazyAttribute(lambda o: f"admin@{o.slug}.test")
    admin_password = PASSWORD
    timezone_name = "UTC"

    @classmethod
    def _create(cls, model_class, **kwargs):
        return tenant_create(**kwargs).tenant


class UserFactory(factory.django.DjangoModelFactory):
    """Creates a user in whatever schema the connection is on; use inside schema_context."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    role = User.Role.MEMBER
    password = factory.django.Password(PASSWORD)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        assert connection.schema_name != "public" or kwargs.get("is_staff"), (
            "tenant users belong in a tenant schema"
        )
        return super()._create(model_class, *args, **kwargs)


class RecordFactory(factory.django.DjangoModelFactory):
    """A synced record, in whatever tenant schema the connection is on. It is new at
    `changed_at` unless `first_seen_at` says it was first seen earlier."""

    class Meta:
        model = Record

    external_id = factory.Sequence(lambda n: f"r-{n}")
    title = factory.LazyAttribute(lambda o: f"Record {o.external_id}")
    url = factory.LazyAttribute(lambda o: f"https://example.test/{o.external_id}")
    changed_at = factory.LazyFunction(timezone.now)
    first_seen_at = factory.LazyAttribute(lambda o: o.changed_at)
