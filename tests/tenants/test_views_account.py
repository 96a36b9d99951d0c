"""The Account page: who you are, change your password, log out."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from tenants.accounts.models import User
from tests.audit.conftest import events
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "plum-orchard-sunrise-42"
ACCOUNT_QUERIES = 5  # domain, session, user, and two SET search_path (public, then the tenant)


def _change(client, old=PASSWORD, new=NEW_PASSWORD, again=None):
    return client.post(
        "/account/",
        {"old_password": old, "new_password1": new, "new_password2": again or new},
    )


def _password_is(tenant, user, password) -> bool:
    with schema_context(tenant.schema_name):
        return User.objects.get(pk=user.pk).check_password(password)


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    for response in (site_client(tenant_a).get("/account/"), _change(site_client(tenant_a))):
        assert response.status_code == 302
        assert response["Location"] == "/login/?next=/account/"


@pytest.mark.parametrize("who", ["admin_a", "member_a"])
def test_every_user_sees_their_email_name_and_role(
    tenant_a, who, request, django_assert_num_queries
):
    user = request.getfixturevalue(who)
    with schema_context(tenant_a.schema_name):
        User.objects.filter(pk=user.pk).update(full_name="Pat Example")
    client = logged_in(tenant_a, user)

    with django_assert_num_queries(ACCOUNT_QUERIES):
        page = client.get("/account/").content.decode()

    assert f"<dd>{user.email}</dd>" in page and "<dd>Pat Example</dd>" in page
    assert f"<dd>{user.get_role_display()}</dd>" in page
    assert 'action="/logout/"' in page
    for field in ("old_password", "new_password1", "new_password2"):
        assert f'<label for="id_{field}">' in page
    assert "autofocus" not in page


def test_a_session_from_another_tenants_site_does_not_work_here(tenant_a, tenant_b, outsider_b):
    client = logged_in(tenant_b, outsider_b)

    response = client.get("/account/", HTTP_HOST=tenant_a.primary_host)
    on_acme = Client(HTTP_HOST=tenant_a.primary_host)
    on_acme.cookies = client.cookies  # globex's session cookie, sent to acme's host
    posted = _change(on_acme)

    assert response.status_code == 302 and response["Location"] == "/login/?next=/account/"
    assert posted.status_code == 302
    assert _password_is(tenant_b, outsider_b, PASSWORD)


def test_a_forged_post_without_a_csrf_token_is_refused(tenant_a, member_a):
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)
    client.cookies = logged_in(tenant_a, member_a).cookies

    assert _change(client).status_code == 403
    assert _password_is(tenant_a, member_a, PASSWORD)


def test_a_user_changes_their_password_and_stays_signed_in(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    response = _change(client)

    assert response.status_code == 302 and response["Location"] == "/account/"
    assert "Your password has been changed." in client.get("/account/").content.decode()
    assert client.get("/").status_code == 200  # the session survived
    assert _password_is(tenant_a, member_a, NEW_PASSWORD)
    [event] = events(tenant_a.schema_name, action="user.password_changed")
    assert (event.target, event.actor_label, event.before, event.after) == (
        member_a.email,
        member_a.email,
        {},
        {},
    )


def test_changing_the_password_signs_out_the_users_other_sessions(tenant_a, member_a):
    laptop, phone = logged_in(tenant_a, member_a), logged_in(tenant_a, member_a)

    _change(laptop)

    assert laptop.get("/").status_code == 200
    assert phone.get("/")["Location"] == "/login/?next=/"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"old": "wrong-password"}, "old_password", "incorrectly"),
        ({"again": "something-else-42x"}, "new_password2", "match"),
        ({"new": "12345678"}, "new_password2", "entirely numeric"),
        ({"new": "member@acme.test"}, "new_password2", "too similar"),
        ({"new": ""}, "new_password1", "required"),
    ],
)
def test_bad_input_is_shown_beside_its_field_and_the_password_stays(
    tenant_a, member_a, data, field, message
):
    client = logged_in(tenant_a, member_a)

    response = _change(client, **data)

    assert response.status_code == 200
    errors = response.context["form"].errors[field]
    assert any(message in error for error in errors), errors
    page = response.content.decode()
    assert f'id="id_{field}_error"' in page and 'aria-invalid="true"' in page
    assert _password_is(tenant_a, member_a, PASSWORD)
    connection.set_schema_to_public()
    assert events(tenant_a.schema_name, action="user.password_changed") == []


def test_the_log_out_button_ends_the_session(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    response = client.post("/logout/")

    assert response.status_code == 302
    assert client.get("/account/")["Location"] == "/login/?next=/account/"
