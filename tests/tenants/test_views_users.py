"""The Users pages of a tenant's site: list, add (invite or password), edit, invitations."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.test import Client
from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent
from tenants.accounts import services
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.services import tenant_delete
from tests.audit.conftest import events
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "plum-orchard-sunrise-42"
# Each page also sends two SET search_path: for the host lookup in public, then the tenant's.
LIST_QUERIES = 6  # domain, session, user, the users
EDIT_QUERIES = 6  # domain, session, user, the edited user


def _user(tenant, email: str) -> User:
    with schema_context(tenant.schema_name):
        return User.objects.get(email=email)


def _users(tenant) -> list[str]:
    with schema_context(tenant.schema_name):
        return sorted(User.objects.values_list("email", flat=True))


def _create(client, **fields):
    data = {"email": "new@acme.test", "full_name": "New Person", "role": "member"}
    return client.post("/users/new/", data | fields)


def _invite_link(message, tenant) -> str:
    match = re.search(re.escape(tenant.site_url) + r"invite/[0-9a-f-]{36}/[\w-]+/", message.body)
    assert match, message.body
    return match.group(0)


def _path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def _errors_of(response, field: str) -> list[str]:
    return response.context["form"].errors.get(field, [])


@pytest.fixture
def second_admin_a(tenant_a):
    with schema_context(tenant_a.schema_name):
        return UserFactory(email="second@acme.test", role="admin")


@pytest.fixture
def admin_client(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    connection.set_schema_to_public()  # the request left it on acme; later fixtures need public
    return client


# --- Access -----------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_login_from_every_users_page(tenant_a, member_a):
    target = member_a.public_id
    for method, path in [
        ("get", "/users/"),
        ("get", "/users/new/"),
        ("post", "/users/new/"),
        ("get", f"/users/{target}/"),
        ("post", f"/users/{target}/"),
        ("post", f"/users/{target}/invite/"),
    ]:
        response = getattr(site_client(tenant_a), method)(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/login/?next="), path


def test_a_member_gets_403_on_every_users_page_and_changes_nothing(tenant_a, admin_a, member_a):
    client = logged_in(tenant_a, member_a)
    target = admin_a.public_id

    responses = [
        client.get("/users/"),
        client.get("/users/new/"),
        _create(client),
        client.get(f"/users/{target}/"),
        client.post(f"/users/{target}/", {"role": "member", "is_active": "on"}),
        client.post(f"/users/{target}/invite/"),
    ]

    assert [r.status_code for r in responses] == [403] * 6
    assert _users(tenant_a) == ["admin@acme.test", "member@acme.test"]
    assert _user(tenant_a, admin_a.email).is_tenant_admin
    assert "Users</a>" not in client.get("/").content.decode()


def test_a_session_from_another_tenants_site_does_not_work_here(tenant_a, tenant_b, outsider_b):
    client = logged_in(tenant_b, outsider_b)

    response = client.get("/users/", HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/users/"


def test_an_admin_asking_for_another_tenants_user_gets_404(
    admin_client, tenant_b, outsider_b, operator
):
    target = outsider_b.public_id

    responses = [
        admin_client.get(f"/users/{target}/"),
        admin_client.post(f"/users/{target}/", {"role": "member", "is_active": ""}),
        admin_client.post(f"/users/{target}/invite/"),
        admin_client.get(f"/users/{uuid.uuid4()}/"),
        admin_client.get(f"/users/{operator.public_id}/"),  # an operator, in public
        admin_client.get("/users/12/"),  # integer ids are not URLs
    ]

    assert [r.status_code for r in responses] == [404] * 6
    assert _user(tenant_b, outsider_b.email).is_tenant_admin


def test_forged_posts_without_a_csrf_token_are_refused(tenant_a, admin_a, member_a):
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)
    client.cookies = logged_in(tenant_a, admin_a).cookies  # a real admin session, no token

    responses = [
        client.post("/users/new/", {"email": "x@acme.test", "role": "admin", "sign_in": "invite"}),
        client.post(f"/users/{member_a.public_id}/", {"role": "admin", "is_active": "on"}),
        client.post(f"/users/{member_a.public_id}/invite/"),
    ]

    assert [r.status_code for r in responses] == [403] * 3
    assert _users(tenant_a) == ["admin@acme.test", "member@acme.test"]
    assert _user(tenant_a, member_a.email).role == "member"
    assert mail.outbox == []


# --- The list ---------------------------------------------------------------------


def test_the_list_shows_each_user_with_role_status_and_last_sign_in_in_the_tenants_zone(
    tenant_a, admin_a, member_a, time_machine
):
    time_machine.move_to(datetime(2026, 7, 1, 10, 30, tzinfo=UTC))
    client = logged_in(tenant_a, admin_a)  # sets admin's last_login: 12:30 in Berlin (CEST)
    with schema_context(tenant_a.schema_name):
        User.objects.filter(pk=member_a.pk).update(full_name="Mia Member")
        UserFactory(email="gone@acme.test", is_active=False)
        pending = UserFactory(email="pending@acme.test")
        pending.set_unusable_password()
        pending.save()

    page = client.get("/users/?page=abc&sort=bogus").content.decode()

    assert '<th scope="col">Last sign-in (Europe/Berlin)</th>' in page
    assert "2026-07-01 12:30" in page
    assert f'href="/users/{member_a.public_id}/">member@acme.test</a>' in page
    assert f'href="/users/{member_a.pk}/"' not in page
    assert "Mia Member" in page and "Tenant admin" in page
    assert 'href="/users/new/">Add user</a>' in page
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    status = {re.search(r">([\w.@]+)</a>", r).group(1): r for r in rows if "</a>" in r}
    assert "deactivated" in status["gone@acme.test"]
    assert "invited" in status["pending@acme.test"]
    assert "never" in status["member@acme.test"]


def test_the_list_takes_the_same_queries_for_one_user_or_thirty(
    tenant_a, admin_client, django_assert_num_queries
):
    with django_assert_num_queries(LIST_QUERIES):
        assert admin_client.get("/users/").status_code == 200

    with schema_context(tenant_a.schema_name):
        UserFactory.create_batch(29)
    with django_assert_num_queries(LIST_QUERIES):
        page = admin_client.get("/users/").content.decode()
    assert page.count("/users/") - page.count("/users/new/") >= 30


# --- Adding a user ----------------------------------------------------------------


def test_an_admin_adds_a_user_with_a_password_who_can_then_sign_in(tenant_a, admin_client):
    with_password = {"sign_in": "password", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}

    response = _create(admin_client, email="  New@Acme.Test ", role="admin", **with_password)

    assert response.status_code == 302 and response["Location"] == "/users/"
    user = _user(tenant_a, "new@acme.test")
    assert (user.full_name, user.role, user.is_active) == ("New Person", "admin", True)
    assert mail.outbox == []
    assert (
        site_client(tenant_a)
        .post("/login/", {"username": "new@acme.test", "password": NEW_PASSWORD})
        .status_code
        == 302
    )
    [event] = events(tenant_a.schema_name, action="user.created")
    assert (event.target, event.actor_label) == ("new@acme.test", "admin@acme.test")
    assert event.after == {"full_name": "New Person", "role": "admin", "sign_in": "password set"}
    assert events("public", action="user.created")[0].public_id == event.public_id


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"email": "MEMBER@acme.test"}, "email", "already exists"),
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"email": ""}, "email", "required"),
        ({"role": "owner"}, "role", "valid choice"),
        ({"sign_in": "carrier-pigeon"}, "sign_in", "valid choice"),
        ({"sign_in": "password"}, "password1", "Enter a password"),
        (
            {"sign_in": "password", "password1": NEW_PASSWORD, "password2": "other-thing-42x"},
            "password2",
            "don't match",
        ),
        ({"sign_in": "password", "password1": "short", "password2": "short"}, "password1", "short"),
        (
            {"sign_in": "password", "password1": "password123", "password2": "password123"},
            "password1",
            "too common",
        ),
        (
            {"sign_in": "password", "password1": "new@acme.test1", "password2": "new@acme.test1"},
            "password1",
            "too similar",
        ),
    ],
)
def test_bad_input_is_shown_beside_its_field_and_nothing_is_saved(
    tenant_a, admin_client, member_a, fields, field, message, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(admin_client, **({"sign_in": "invite"} | fields))

    assert response.status_code == 200
    assert any(message in error for error in _errors_of(response, field)), response.context[
        "form"
    ].errors
    page = response.content.decode()
    assert f'id="id_{field}_error"' in page or field == "sign_in"
    assert _users(tenant_a) == ["admin@acme.test", "member@acme.test"]
    assert mail.outbox == []
    assert events(tenant_a.schema_name, action="user.created") == []


def test_an_email_taken_between_the_check_and_the_insert_is_a_field_error(tenant_a, monkeypatch):
    # As if another request added it meanwhile: the check sees nothing, the database refuses.
    real_filter = User.objects.filter
    monkeypatch.setattr(User.objects, "filter", lambda **kw: real_filter(email="nobody@x.test"))
    with schema_context(tenant_a.schema_name), pytest.raises(ValidationError) as caught:
        services.user_create(email="ADMIN@acme.test", full_name="", role="member")
    monkeypatch.undo()

    assert caught.value.message_dict == {"email": [services.EMAIL_TAKEN]}
    assert _users(tenant_a) == ["admin@acme.test"]


def test_an_invited_user_gets_a_one_time_link_once_the_change_is_committed(
    tenant_a, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _create(admin_client, sign_in="invite", role="admin")
        assert mail.outbox == []  # not before the commit
    for callback in callbacks:
        callback()

    assert response.status_code == 302
    user = _user(tenant_a, "new@acme.test")
    assert not user.has_usable_password() and user.role == "admin"
    [message] = mail.outbox
    assert message.to == ["new@acme.test"]
    assert message.subject == "You are invited to Acme Corp"
    link = _invite_link(message, tenant_a)
    assert f"/invite/{user.public_id}/" in link and f"/{user.pk}/" not in link
    html, kind = message.alternatives[0]
    assert kind == "text/html" and f'href="{link}"' in html
    assert "admin@acme.test has invited you to" in message.body
    assert "as a tenant admin" in message.body and "3 days" in message.body
    assert [e.action for e in events(tenant_a.schema_name)] == ["user.created", "user.invited"]


def test_following_the_invitation_sets_the_password_then_the_link_is_used_up(
    tenant_a, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _create(admin_client, sign_in="invite")
    path = _path(_invite_link(mail.outbox[0], tenant_a))
    visitor = site_client(tenant_a)

    form_page = visitor.get(path)
    weak = visitor.post(path, {"new_password1": "123", "new_password2": "123"})
    accepted = visitor.post(path, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    again = site_client(tenant_a).get(path)

    assert form_page.status_code == 200 and "new@acme.test" in form_page.content.decode()
    assert weak.status_code == 200 and weak.context["form"].errors["new_password2"]
    assert accepted.status_code == 302 and accepted["Location"] == "/login/"
    signed_in = visitor.post("/login/", {"username": "new@acme.test", "password": NEW_PASSWORD})
    assert signed_in.status_code == 302
    assert again.status_code == 400
    assert "This invitation link does not work" in again.content.decode()
    [event] = events(tenant_a.schema_name, action="user.invite_accepted")
    assert (event.actor_kind, event.actor_label) == ("user", "new@acme.test")


def test_an_expired_invitation_link_gives_a_clear_400_page(
    tenant_a, admin_client, django_capture_on_commit_callbacks, time_machine
):
    time_machine.move_to(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        _create(admin_client, sign_in="invite")
    path = _path(_invite_link(mail.outbox[0], tenant_a))

    time_machine.move_to(
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)
    )
    response = site_client(tenant_a).post(
        path, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert response.status_code == 400
    assert "expired" in response.content.decode()
    assert not _user(tenant_a, "new@acme.test").has_usable_password()


def test_bad_invitation_links_give_a_clear_page_never_a_500(
    tenant_a, admin_client, tenant_b, django_capture_on_commit_callbacks
):
    with schema_context(tenant_b.schema_name), django_capture_on_commit_callbacks(execute=True):
        services.user_create(email="guest@globex.test", full_name="", role="member")
    globex_path = _path(_invite_link(mail.outbox[0], tenant_b))
    with django_capture_on_commit_callbacks(execute=True):
        _create(admin_client, sign_in="invite")
    acme_user = _user(tenant_a, "new@acme.test")

    on_acme = site_client(tenant_a)
    other_tenants = on_acme.get(globex_path)
    forged_token = on_acme.get(f"/invite/{acme_user.public_id}/abc-123/")
    unknown = on_acme.post(
        f"/invite/{uuid.uuid4()}/abc-123/",
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert other_tenants.status_code == 404
    assert forged_token.status_code == 400
    assert unknown.status_code == 404
    for response in (other_tenants, forged_token, unknown):
        assert "This invitation link does not work" in response.content.decode()
    assert site_client(tenant_b).get(globex_path).status_code == 200


def test_an_invitation_link_is_refused_when_forged_or_its_user_deactivated(
    tenant_a, admin_a, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _create(admin_client, sign_in="invite")
    path = _path(_invite_link(mail.outbox[0], tenant_a))
    forger = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)
    new_password = {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}

    forged = forger.post(path, new_password)
    with schema_context(tenant_a.schema_name):
        services.user_update(
            user=User.objects.get(email="new@acme.test"),
            actor=admin_a,
            full_name="",
            role="member",
            is_active=False,
        )
    deactivated = site_client(tenant_a).post(path, new_password)

    assert forged.status_code == 403
    assert deactivated.status_code == 404
    assert "This invitation link does not work" in deactivated.content.decode()
    assert not _user(tenant_a, "new@acme.test").has_usable_password()


def test_sending_the_invitation_again_replaces_the_old_link(
    tenant_a, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _create(admin_client, sign_in="invite")
    user = _user(tenant_a, "new@acme.test")
    first = _path(_invite_link(mail.outbox[0], tenant_a))
    edit_page = admin_client.get(f"/users/{user.public_id}/").content.decode()
    assert "Send the invitation again" in edit_page

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/users/{user.public_id}/invite/", follow=True)

    assert "A new invitation was sent to new@acme.test." in response.content.decode()
    second = _path(_invite_link(mail.outbox[1], tenant_a))
    assert site_client(tenant_a).get(first).status_code == 400
    assert site_client(tenant_a).get(second).status_code == 200
    assert admin_client.get(f"/users/{user.public_id}/invite/").status_code == 405


def test_a_user_with_a_password_is_not_sent_an_invitation(
    tenant_a, admin_client, member_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/users/{member_a.public_id}/invite/", follow=True)

    assert "has already set a password" in response.content.decode()
    assert mail.outbox == []
    assert _user(tenant_a, member_a.email).check_password(PASSWORD)


# --- Editing a user ---------------------------------------------------------------


def test_an_admin_changes_a_users_name_and_role(tenant_a, admin_client, member_a):
    response = admin_client.post(
        f"/users/{member_a.public_id}/",
        {"full_name": " Mia Member ", "role": "admin", "is_active": "on"},
    )

    assert response.status_code == 302 and response["Location"] == "/users/"
    user = _user(tenant_a, member_a.email)
    assert (user.full_name, user.role, user.is_active) == ("Mia Member", "admin", True)
    [event] = events(tenant_a.schema_name, action="user.changed")
    assert event.target == "member@acme.test"
    assert event.before == {"full_name": "", "role": "member"}
    assert event.after == {"full_name": "Mia Member", "role": "admin"}
    log = admin_client.get("/audit/").content.decode()
    assert "role: member → admin" in log


def test_the_edit_page_shows_the_user_and_takes_fixed_queries(
    tenant_a, admin_client, member_a, django_assert_num_queries
):
    with django_assert_num_queries(EDIT_QUERIES):
        page = admin_client.get(f"/users/{member_a.public_id}/").content.decode()

    assert "<h1>member@acme.test</h1>" in page
    assert 'name="role"' in page and 'name="is_active"' in page and "checked" in page
    assert "Send the invitation again" not in page


def test_bad_edit_input_is_shown_beside_the_field_and_nothing_is_saved(
    tenant_a, admin_client, member_a
):
    response = admin_client.post(
        f"/users/{member_a.public_id}/", {"full_name": "x" * 151, "role": "boss", "is_active": "on"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"full_name", "role"}
    assert 'aria-invalid="true"' in response.content.decode()
    assert _user(tenant_a, member_a.email).role == "member"
    assert events(tenant_a.schema_name) == []


def test_a_deactivated_user_is_signed_out_at_once_and_stays_out_after_reactivation(
    tenant_a, admin_client, member_a
):
    member = logged_in(tenant_a, member_a)
    assert member.get("/account/").status_code == 200

    response = admin_client.post(f"/users/{member_a.public_id}/", {"role": "member"})

    assert response.status_code == 302
    assert not _user(tenant_a, member_a.email).is_active
    assert member.get("/account/")["Location"] == "/login/?next=/account/"
    with schema_context(tenant_a.schema_name):
        live = [s.get_decoded().get("_auth_user_id") for s in Session.objects.all()]
    assert str(member_a.pk) not in live
    refused = site_client(tenant_a).post(
        "/login/", {"username": member_a.email, "password": PASSWORD}
    )
    assert refused.status_code == 200

    admin_client.post(f"/users/{member_a.public_id}/", {"role": "member", "is_active": "on"})

    assert _user(tenant_a, member_a.email).is_active
    assert member.get("/account/").status_code == 302  # the old session did not come back
    assert [e.action for e in events(tenant_a.schema_name)] == [
        "user.deactivated",
        "user.reactivated",
    ]


def test_deactivating_ends_only_that_users_sessions(tenant_a, admin_a, member_a):
    with schema_context(tenant_a.schema_name):
        other = UserFactory(email="other@acme.test")
    member, bystander = logged_in(tenant_a, member_a), logged_in(tenant_a, other)

    with schema_context(tenant_a.schema_name):
        services.user_update(
            user=member_a, actor=admin_a, full_name="", role="member", is_active=False
        )
        remaining = {s.get_decoded()["_auth_user_id"] for s in Session.objects.all()}

    assert remaining == {str(other.pk)}
    assert member.get("/")["Location"].startswith("/login/")
    assert bystander.get("/").status_code == 200


# --- The last admin ---------------------------------------------------------------


def test_the_last_admin_cannot_demote_themself(tenant_a, admin_a, admin_client):
    response = admin_client.post(
        f"/users/{admin_a.public_id}/", {"role": "member", "is_active": "on"}
    )

    assert response.status_code == 200
    assert _errors_of(response, "role") == [services.LAST_ADMIN]
    assert "last active tenant admin" in response.content.decode()
    assert _user(tenant_a, admin_a.email).is_tenant_admin
    assert events(tenant_a.schema_name) == []


def test_an_admin_cannot_deactivate_themself(tenant_a, admin_a, admin_client, second_admin_a):
    response = admin_client.post(f"/users/{admin_a.public_id}/", {"role": "admin"})

    assert response.status_code == 200
    assert _errors_of(response, "is_active") == [services.NOT_YOURSELF]
    assert _user(tenant_a, admin_a.email).is_active


def test_an_admin_may_step_down_while_another_admin_remains(
    tenant_a, admin_a, admin_client, second_admin_a
):
    response = admin_client.post(
        f"/users/{admin_a.public_id}/", {"role": "member", "is_active": "on"}
    )

    assert response.status_code == 302 and response["Location"] == "/"
    assert _user(tenant_a, admin_a.email).role == "member"
    assert admin_client.get("/users/").status_code == 403


def test_the_last_admin_cannot_be_demoted_or_deactivated_through_the_service(
    tenant_a, admin_a, second_admin_a
):
    with schema_context(tenant_a.schema_name):
        services.user_update(
            user=second_admin_a, actor=admin_a, full_name="", role="admin", is_active=False
        )
        with pytest.raises(ValidationError) as demoting:
            services.user_update(
                user=admin_a, actor=admin_a, full_name="", role="member", is_active=True
            )
        member = User.objects.get(pk=second_admin_a.pk)
        with pytest.raises(PermissionDenied):  # a deactivated admin is nobody's actor
            services.user_update(
                user=admin_a, actor=member, full_name="", role="member", is_active=True
            )

    assert demoting.value.message_dict == {"role": [services.LAST_ADMIN]}
    assert _user(tenant_a, admin_a.email).is_tenant_admin


@pytest.fixture
def race_tenant(transactional_db):
    tenant = TenantFactory(name="Race", slug="race")
    with schema_context("race"):
        UserFactory(email="second@race.test", role="admin")
    yield tenant
    connection.set_schema_to_public()
    tenant_delete(tenant=Tenant.objects.get(schema_name="race"))


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_two_admins_stepping_down_at_once_leave_one_admin(race_tenant):
    with schema_context("race"):
        first = User.objects.get(email="admin@race.test")
        second = User.objects.get(email="second@race.test")
    outcome: dict[str, object] = {}

    def second_steps_down():
        try:
            with schema_context("race"):
                services.user_update(
                    user=second, actor=second, full_name="", role="member", is_active=True
                )
            outcome["second"] = "stepped down"
        except Exception as exc:  # the outcome is what the test checks
            outcome["second"] = exc
        finally:
            connection.close()

    with schema_context("race"):
        with transaction.atomic():
            services.user_update(
                user=first, actor=first, full_name="", role="member", is_active=True
            )
            racer = threading.Thread(target=second_steps_down)
            racer.start()
            deadline = time.monotonic() + 10
            while not _waiting_on_a_lock():  # the second demotion waits for the first
                assert time.monotonic() < deadline, "the second demotion never waited"
                time.sleep(0.05)
        racer.join(10)
        admins = list(User.objects.filter(role="admin").values_list("email", flat=True))

    assert isinstance(outcome["second"], ValidationError)
    assert outcome["second"].message_dict == {"role": [services.LAST_ADMIN]}
    assert admins == ["second@race.test"]
    with schema_context("race"):
        assert AuditEvent.objects.filter(action="user.changed").count() == 1
