"""Sign-in is throttled per account and per address, on each site separately."""

from __future__ import annotations

import pytest

from tests.conftest import site_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

THROTTLED = "Too many failed sign-ins."


@pytest.fixture(autouse=True)
def _small_limits(settings):
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 6


def _sign_in(client, email, password, address="10.0.0.1"):
    return client.post("/login/", {"username": email, "password": password}, REMOTE_ADDR=address)


def _fail(client, email, times, address="10.0.0.1"):
    for _ in range(times):
        response = _sign_in(client, email, "wrong-password", address)
        assert response.status_code == 200


def test_an_account_stops_answering_after_repeated_failures_even_to_its_password(
    tenant_a, member_a
):
    client = site_client(tenant_a)
    _fail(client, member_a.email, 3)

    response = _sign_in(client, member_a.email, PASSWORD)

    assert response.status_code == 200
    assert THROTTLED in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_other_accounts_and_other_tenants_are_not_affected(
    tenant_a, member_a, admin_a, tenant_b, outsider_b
):
    _fail(site_client(tenant_a), member_a.email, 3)

    assert _sign_in(site_client(tenant_a), admin_a.email, PASSWORD).status_code == 302
    # globex counts its own sign-ins: the same address is not blocked there.
    _fail(site_client(tenant_b), "member@acme.test", 2)
    assert _sign_in(site_client(tenant_b), outsider_b.email, PASSWORD).status_code == 302


def test_one_address_spraying_many_accounts_is_stopped(tenant_a, admin_a):
    client = site_client(tenant_a)
    for number in range(6):
        _fail(client, f"guess{number}@acme.test", 1)

    blocked = _sign_in(client, admin_a.email, PASSWORD)
    elsewhere = _sign_in(site_client(tenant_a), admin_a.email, PASSWORD, address="10.0.0.2")

    assert THROTTLED in blocked.content.decode()
    assert elsewhere.status_code == 302


def test_a_success_resets_the_account_count(tenant_a, member_a):
    client = site_client(tenant_a)
    _fail(client, member_a.email, 2)
    assert _sign_in(client, member_a.email, PASSWORD).status_code == 302

    _fail(site_client(tenant_a), member_a.email, 2)
    assert _sign_in(site_client(tenant_a), member_a.email, PASSWORD).status_code == 302


def test_the_operator_site_is_throttled_too(operator):
    client = site_client()
    _fail(client, operator.email, 3)

    response = _sign_in(client, operator.email, PASSWORD)

    assert THROTTLED in response.content.decode()


def test_behind_a_proxy_the_configured_header_is_the_address(tenant_a, admin_a, settings):
    settings.LOGIN_CLIENT_ADDRESS_KEY = "HTTP_X_REAL_IP"
    client = site_client(tenant_a)
    for number in range(6):  # all through the proxy's 10.0.0.1, from one real client
        client.post(
            "/login/",
            {"username": f"guess{number}@acme.test", "password": "x"},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_REAL_IP="203.0.113.7",
        )

    other_client = client.post(
        "/login/",
        {"username": admin_a.email, "password": PASSWORD},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_REAL_IP="203.0.113.8",
    )

    assert other_client.status_code == 302
