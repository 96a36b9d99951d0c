"""Each host sees only its own tenant; unknown hosts get a plain 404."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from tenants.accounts.models import User
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_a_tenant_host_shows_only_that_tenants_users(tenant_a, admin_a, member_a, outsider_b):
    client = logged_in(tenant_a, admin_a)

    page = client.get("/users/").content.decode()

    assert "member@acme.test" in page and "admin@acme.test" in page
    assert "globex" not in page


def test_the_same_email_is_a_different_account_in_each_tenant(tenant_a, tenant_b):
    with schema_context("acme"):
        UserFactory(email="pat@example.test", password="acme-password-1")
    with schema_context("globex"):
        UserFactory(email="pat@example.test", password="globex-password-1")

    acme, globex = site_client(tenant_a), site_client(tenant_b)

    assert (
        acme.post(
            "/login/", {"username": "pat@example.test", "password": "acme-password-1"}
        ).status_code
        == 302
    )
    assert (
        globex.post(
            "/login/", {"username": "pat@example.test", "password": "acme-password-1"}
        ).status_code
        == 200
    )
    assert (
        globex.post(
            "/login/", {"username": "pat@example.test", "password": "globex-password-1"}
        ).status_code
        == 302
    )


def test_an_outsiders_credentials_do_not_open_another_tenant(tenant_a, outsider_b):
    response = site_client(tenant_a).post(
        "/login/", {"username": outsider_b.email, "password": PASSWORD}
    )

    assert response.status_code == 200
    assert "enter a correct email" in response.content.decode().lower()


def test_a_session_from_one_tenant_is_worthless_on_another(tenant_a, tenant_b, admin_a):
    client = logged_in(tenant_a, admin_a)
    assert client.get("/users/").status_code == 200

    # The test client replays every cookie whatever the host; a browser would not even send it.
    response = client.get("/users/", HTTP_HOST=tenant_b.primary_host)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("host", ["nobody.localhost", "acme.localhost.evil.test", "203.0.113.9"])
def test_an_unknown_host_gets_a_clear_404(tenant_a, host):
    response = Client(HTTP_HOST=host).get("/login/")

    assert response.status_code == 404
    assert "There is no site at this address" in response.content.decode()


def test_the_base_domain_is_the_operator_site(tenant_a):
    response = site_client().get("/login/")

    assert response.status_code == 200
    assert "Scheduler operations" in response.content.decode()
    assert site_client().get("/admin/").status_code == 302


def test_a_paused_tenant_still_serves_its_site(tenant_a, admin_a):
    from tenants.services import tenant_pause

    tenant_pause(tenant=tenant_a)

    assert logged_in(tenant_a, admin_a).get("/").status_code == 200


def test_users_are_created_in_the_tenant_schema_only(tenant_a, member_a):
    assert not User.objects.filter(email=member_a.email).exists()
    with schema_context(tenant_a.schema_name):
        assert User.objects.filter(email=member_a.email).exists()
