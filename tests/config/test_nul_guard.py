"""A NUL character in a query string or form body is a 400 on every site, never a 500:
PostgreSQL text cannot hold one, and admin filters pass query values straight on."""

from __future__ import annotations

import pytest

from tests.conftest import logged_in

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "query",
    [
        {"name": "\x00"},  # a hand-made lookup the admin would pass to PostgreSQL
        {"q": "ac\x00me"},
        {"o\x00": "1"},
    ],
)
def test_the_operator_admin_answers_400_to_a_nul_in_the_query(operator_client, tenant_a, query):
    response = operator_client.get("/admin/tenants/tenant/", query)

    assert response.status_code == 400


def test_a_tenant_page_answers_400_to_a_nul_in_the_query(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).get("/runs/", {"status": "fail\x00ed"})

    assert response.status_code == 400


def test_a_form_post_with_a_nul_is_refused_and_changes_nothing(tenant_a, admin_a):
    response = logged_in(tenant_a, admin_a).post("/sync/pause/", {"note": "away\x00"})

    assert response.status_code == 400
    tenant_a.refresh_from_db()
    assert tenant_a.status == "active"


def test_ordinary_requests_pass(operator_client, tenant_a, member_a):
    assert operator_client.get("/admin/tenants/tenant/", {"q": "acme"}).status_code == 200
    assert logged_in(tenant_a, member_a).get("/runs/", {"status": "failed"}).status_code == 200
