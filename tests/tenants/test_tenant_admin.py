"""The operators' tenant form: the source token is write-only."""

from __future__ import annotations

import pytest

from tenants.models import Tenant
from tests.conftest import logged_in
from tests.helpers import admin_form_data

pytestmark = pytest.mark.django_db

SECRET = "s3cret-bearer-value"


@pytest.fixture
def change_url(tenant_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(source_token=SECRET)
    return f"/admin/tenants/tenant/{tenant_a.pk}/change/"


def _post(client, url, **changes):
    response = client.post(url, admin_form_data(client, url, **changes))
    return response, Tenant.objects.get(schema_name="acme")


def test_the_token_is_never_rendered_back(operator_client, change_url):
    page = operator_client.get(change_url).content.decode()

    assert SECRET not in page
    assert "source token" in page.lower() and ">set<" in page


def test_saving_without_a_new_token_keeps_it(operator_client, change_url):
    response, tenant = _post(operator_client, change_url, name="Acme Renamed")

    assert response.status_code == 302
    assert (tenant.name, tenant.source_token) == ("Acme Renamed", SECRET)


def test_a_new_token_replaces_it_and_clear_removes_it(operator_client, change_url):
    _, replaced = _post(operator_client, change_url, new_source_token="fresh-token")
    _, cleared = _post(operator_client, change_url, clear_source_token=True)

    assert replaced.source_token == "fresh-token"
    assert cleared.source_token == ""


def test_setting_and_clearing_at_once_is_refused(operator_client, change_url):
    response, tenant = _post(
        operator_client, change_url, new_source_token="x", clear_source_token=True
    )

    assert response.status_code == 200
    assert "Either set a new token or remove it, not both." in response.content.decode()
    assert tenant.source_token == SECRET


def test_tenant_users_cannot_reach_the_operator_admin(tenant_a, admin_a, change_url):
    client = logged_in(tenant_a, admin_a)

    assert client.get(change_url).status_code == 404  # the tenant site has no admin at all
