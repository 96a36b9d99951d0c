"""Standing people (STYLE.md 12): an admin and a member of tenant A, an outsider from B,
and an operator signed in to the operator site."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context
from tenant_schemas_celery import task as tenant_task

from tenants.accounts.models import User
from tests.factories import PASSWORD, TenantFactory, UserFactory


@pytest.fixture(autouse=True)
def _public_schema_after_each_test():
    yield
    connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _no_tenant_rows_cached_across_tests():
    """Workers cache Tenant rows by schema for CELERY_TASK_TENANT_CACHE_SECONDS; tests
    recreate "acme" and "globex" with new keys, so a row cached by one test is stale."""
    yield
    tenant_task._shared_storage.clear()


@pytest.fixture(autouse=True)
def _no_sign_in_throttling_carried_over():
    """Failed sign-ins are counted in Redis per schema; tests reuse schema names."""
    client = redis.Redis.from_url(settings.REDIS.client)
    yield
    for key in client.scan_iter("*login-failures:*"):
        client.delete(key)


@pytest.fixture
def tenant_a(db):
    return TenantFactory(name="Acme Corp", slug="acme", timezone_name="Europe/Berlin")


@pytest.fixture
def tenant_b(db):
    return TenantFactory(name="Globex", slug="globex", timezone_name="America/New_York")


@pytest.fixture
def admin_a(tenant_a):
    with schema_context(tenant_a.schema_name):
        return User.objects.get(email="admin@acme.test")


@pytest.fixture
def member_a(tenant_a):
    with schema_context(tenant_a.schema_name):
        return UserFactory(email="member@acme.test")


@pytest.fixture
def outsider_b(tenant_b):
    with schema_context(tenant_b.schema_name):
        return UserFactory(email="outsider@globex.test", role="admin")


def site_client(tenant=None) -> Client:
    """A test client whose requests go to the tenant's host, or the operator site."""

    host = tenant.primary_host if tenant is not None else settings.BASE_DOMAIN
    return Client(HTTP_HOST=host)


def logged_in(tenant, user) -> Client:
    client = site_client(tenant)
    response = client.post("/login/", {"username": user.email, "password": PASSWORD})
    assert response.status_code == 302, "login failed"
    return client


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_user("ops@platform.test", PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client(HTTP_HOST=settings.BASE_DOMAIN)
    response = client.post("/login/", {"username": operator.email, "password": PASSWORD})
    assert response.status_code == 302, "operator login failed"
    return client
