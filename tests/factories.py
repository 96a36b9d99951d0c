"""factory-boy factories. Tenants are built through the onboarding service, never raw."""

from __future__ import annotations

import factory
from django.db import connection

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
