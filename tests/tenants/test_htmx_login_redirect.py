"""An htmx request whose session has ended sends the whole page to sign-in."""

from __future__ import annotations

import pytest

from tests.conftest import logged_in, site_client

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_a_signed_out_poll_sends_the_browser_to_sign_in_and_back(tenant_a):
    response = site_client(tenant_a).get(
        "/runs/",
        {"status": "failed"},
        HTTP_HX_CURRENT_URL=f"http://{tenant_a.primary_host}/runs/?status=failed&page=2",
        **HTMX,
    )

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=%2Fruns%2F%3Fstatus%3Dfailed%26page%3D2"
    assert response.content == b""


def test_without_htmx_the_usual_redirect_stays(tenant_a):
    response = site_client(tenant_a).get("/runs/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/runs/"
    assert "HX-Redirect" not in response


def test_other_redirects_of_an_htmx_request_are_left_alone(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    response = client.post("/sync/pause/", {"note": ""}, **HTMX)

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "HX-Redirect" not in response


def test_a_member_refused_by_role_gets_403_not_a_redirect(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).get("/audit/", **HTMX)

    assert response.status_code == 403
    assert "HX-Redirect" not in response
