from __future__ import annotations

import pytest

from tenants.accounts.models import User
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    for path in ("/", "/users/"):
        response = site_client(tenant_a).get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"


def test_a_tenant_admin_manages_users(tenant_a, admin_a):
    assert admin_a.is_tenant_admin
    assert logged_in(tenant_a, admin_a).get("/users/").status_code == 200


def test_a_member_sees_the_dashboard_but_not_user_management(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    assert client.get("/").status_code == 200
    assert client.get("/users/").status_code == 403
    assert "Users</a>" not in client.get("/").content.decode()


def test_a_deactivated_admin_loses_admin_rights(tenant_a, admin_a):
    admin_a.is_active = False
    assert not admin_a.is_tenant_admin


def test_the_operator_site_admits_staff_only(tenant_a):
    User.objects.create_user("ops@platform.test", PASSWORD, is_staff=True, is_superuser=True)
    User.objects.create_user("nobody@platform.test", PASSWORD)

    refused = site_client().post(
        "/login/", {"username": "nobody@platform.test", "password": PASSWORD}
    )
    operator = site_client()
    admitted = operator.post("/login/", {"username": "ops@platform.test", "password": PASSWORD})

    assert refused.status_code == 200 and "for platform operators" in refused.content.decode()
    assert admitted.status_code == 302
    assert operator.get("/admin/").status_code == 200


def test_a_tenant_admin_cannot_sign_in_to_the_operator_site(tenant_a, admin_a):
    response = site_client().post("/login/", {"username": admin_a.email, "password": PASSWORD})

    assert response.status_code == 200
    assert site_client().get("/admin/").status_code == 302


def test_logout_ends_the_session(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    client.post("/logout/")

    assert client.get("/").status_code == 302
