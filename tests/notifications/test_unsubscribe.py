"""One-click unsubscribe: the signed link in every digest turns that user's digest off,
without a sign-in, audited as the user; a tampered or foreign link changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.test import Client
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from notifications.unsubscribe import (
    UnsubscribeLinkInvalid,
    digest_unsubscribe,
    unsubscribe_token,
    unsubscribe_url,
    unsubscribe_user_get,
)
from scheduling.audit.models import AuditEvent
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tests.audit.conftest import events
from tests.conftest import logged_in, site_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NOON_UTC = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
INVALID_PAGE = "This unsubscribe link is not valid"


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(NOON_UTC, tick=False)


def _daily(user, slug: str = "acme") -> UserSchedule:
    with schema_context(slug):
        return user_schedule_update(user=user, frequency="daily", hour=7)


def _schedule(user, slug: str = "acme") -> UserSchedule | None:
    with schema_context(slug):
        return UserSchedule.objects.filter(user=user).first()


def _link(user, slug: str = "acme") -> str:
    """The path of the user's unsubscribe link, as a digest email carries it."""
    with schema_context(slug):
        return urlsplit(unsubscribe_url(user=user)).path


def _unsubscribed_events(slug: str = "acme") -> list[AuditEvent]:
    return events(slug, action="digest.unsubscribed")


def _dispatcher_enabled(slug: str = "acme") -> bool:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:digests").enabled


def _tampered(token: str) -> str:
    """The token with the first character of its signature changed."""
    head, _, signature = token.rpartition(":")
    changed = "B" if signature[0] == "A" else "A"
    return f"{head}:{changed}{signature[1:]}"


# --- The link --------------------------------------------------------------------------


def test_the_link_is_absolute_on_the_tenants_site_and_needs_no_request(tenant_a, member_a):
    with schema_context("acme"):  # as in a worker: a schema, no request
        url = unsubscribe_url(user=member_a)
        token = unsubscribe_token(user=member_a)

    assert url == f"http://acme.localhost/unsubscribe/{token}/"


def test_the_link_names_the_user_by_public_id_and_the_tenant_by_schema(tenant_a, member_a):
    with schema_context("acme"):
        token = unsubscribe_token(user=member_a)

    payload = signing.Signer(salt="notifications.unsubscribe").unsign_object(token)
    assert payload == {"s": "acme", "u": str(member_a.public_id)}
    assert f"/{member_a.pk}/" not in _link(member_a)


def test_the_link_finds_its_user_only_in_its_own_tenant(tenant_a, member_a, tenant_b):
    with schema_context("acme"):
        token = unsubscribe_token(user=member_a)
        assert unsubscribe_user_get(token=token) == member_a
    with schema_context("globex"), pytest.raises(UnsubscribeLinkInvalid) as refused:
        unsubscribe_user_get(token=token)

    assert str(refused.value).startswith(INVALID_PAGE)


# --- Following it ----------------------------------------------------------------------


def test_following_the_link_only_asks_so_scanners_change_nothing(tenant_a, member_a):
    before = _daily(member_a)

    response = site_client(tenant_a).get(_link(member_a))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Unsubscribe member@acme.test from Acme Corp digests?" in html
    assert '<form method="post" id="unsubscribe-form">' in html
    assert 'document.getElementById("unsubscribe-form").submit();' in html
    after = _schedule(member_a)
    assert (after.enabled, after.next_due_at) == (True, before.next_due_at)
    assert _unsubscribed_events() == []
    assert _dispatcher_enabled()


def test_the_pages_are_neither_cached_nor_indexed(tenant_a, member_a):
    _daily(member_a)
    client = site_client(tenant_a)

    for response in (client.get(_link(member_a)), client.post(_link(member_a))):
        assert "no-store" in response["Cache-Control"]
        assert "noindex" in response["X-Robots-Tag"]


def test_posting_turns_the_digest_off_and_keeps_its_settings(tenant_a, member_a):
    with schema_context("acme"):
        user_schedule_update(user=member_a, frequency="daily", hour=7, send_when_empty=True)

    response = site_client(tenant_a).post(_link(member_a))

    assert response.status_code == 200
    html = response.content.decode()
    assert "You will get no more digests from Acme Corp" in html
    assert 'href="/login/?next=/digest/"' in html
    schedule = _schedule(member_a)
    assert (schedule.enabled, schedule.next_due_at) == (False, None)
    assert (schedule.frequency, schedule.hour, schedule.timezone) == ("daily", 7, "Europe/Berlin")
    assert schedule.send_when_empty is True


def test_the_unsubscribe_is_audited_once_as_the_user_with_a_note(tenant_a, member_a):
    _daily(member_a)
    changed_before = len(events("acme", action="digest.changed"))

    site_client(tenant_a).post(_link(member_a))

    [event] = _unsubscribed_events()
    assert (event.actor_kind, event.actor_label, event.actor_id) == (
        "user",
        "member@acme.test",
        member_a.public_id,
    )
    assert (event.target, event.tenant_slug) == ("member@acme.test", "acme")
    assert (event.before, event.after) == ({"enabled": True}, {"enabled": False})
    assert event.note == "From the unsubscribe link in a digest email."
    assert [e.public_id for e in _unsubscribed_events("public")] == [event.public_id]
    assert len(events("acme", action="digest.changed")) == changed_before


def test_the_actor_is_the_links_user_even_when_someone_else_is_signed_in(
    tenant_a, admin_a, member_a
):
    _daily(member_a)

    logged_in(tenant_a, admin_a).post(_link(member_a))

    [event] = _unsubscribed_events()
    assert (event.actor_label, event.actor_id) == ("member@acme.test", member_a.public_id)
    assert _schedule(member_a).enabled is False


def test_the_last_live_digest_going_off_stops_the_tenant_dispatcher(tenant_a, member_a):
    _daily(member_a)
    assert _dispatcher_enabled()

    site_client(tenant_a).post(_link(member_a))

    assert not _dispatcher_enabled()


def test_the_dispatcher_keeps_running_while_others_still_get_digests(tenant_a, admin_a, member_a):
    _daily(member_a)
    _daily(admin_a)

    site_client(tenant_a).post(_link(member_a))

    assert _dispatcher_enabled()
    assert _schedule(admin_a).enabled is True


def test_a_one_click_post_without_session_or_csrf_token_works(tenant_a, member_a):
    _daily(member_a)
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)

    response = client.post(_link(member_a), ONE_CLICK, content_type=FORM)

    assert response.status_code == 200
    assert _schedule(member_a).enabled is False
    assert len(_unsubscribed_events()) == 1


def test_other_methods_are_refused(tenant_a, member_a):
    _daily(member_a)

    response = site_client(tenant_a).put(_link(member_a))

    assert response.status_code == 405
    assert _schedule(member_a).enabled is True


# --- Links that are not valid --------------------------------------------------------


def _bad_tokens(token: str) -> dict[str, str]:
    other_salt = signing.Signer(salt="tenants.accounts.other").sign_object(
        signing.Signer(salt="notifications.unsubscribe").unsign_object(token)
    )
    return {
        "one character changed": _tampered(token),
        "truncated": token[:-5],
        "garbage": "not-a-token",
        "signed with another salt": other_salt,
        "unsigned payload": token.rpartition(":")[0],
    }


@pytest.mark.parametrize(
    "kind",
    [
        "one character changed",
        "truncated",
        "garbage",
        "signed with another salt",
        "unsigned payload",
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_link_is_refused_with_a_clear_page_and_changes_nothing(
    tenant_a, member_a, kind, method
):
    before = _daily(member_a)
    with schema_context("acme"):
        bad = _bad_tokens(unsubscribe_token(user=member_a))[kind]

    response = getattr(site_client(tenant_a), method)(f"/unsubscribe/{bad}/")

    assert response.status_code == 400
    html = response.content.decode()
    assert INVALID_PAGE in html
    assert "sign in</a> and turn digests off under My digest" in html
    assert "member@acme.test" not in html
    after = _schedule(member_a)
    assert (after.enabled, after.next_due_at) == (True, before.next_due_at)
    assert _unsubscribed_events() == [] and _unsubscribed_events("public") == []


def test_acmes_link_on_globexs_site_is_refused_and_neither_tenant_changes(
    tenant_a, member_a, tenant_b, outsider_b
):
    _daily(member_a)
    _daily(outsider_b, "globex")

    get = site_client(tenant_b).get(_link(member_a))
    post = site_client(tenant_b).post(_link(member_a), ONE_CLICK, content_type=FORM)

    assert (get.status_code, post.status_code) == (400, 400)
    assert INVALID_PAGE in post.content.decode()
    assert _schedule(member_a).enabled is True
    assert _schedule(outsider_b, "globex").enabled is True
    assert _unsubscribed_events("public") == []
    assert _dispatcher_enabled("acme") and _dispatcher_enabled("globex")


def test_globexs_link_on_acmes_site_is_refused(tenant_a, member_a, tenant_b, outsider_b):
    _daily(member_a)
    _daily(outsider_b, "globex")

    response = site_client(tenant_a).post(_link(outsider_b, "globex"))

    assert response.status_code == 400
    assert _schedule(outsider_b, "globex").enabled is True
    assert _schedule(member_a).enabled is True
    assert _unsubscribed_events("public") == []


def test_a_link_signed_for_one_tenant_never_reaches_a_user_of_another(
    tenant_a, tenant_b, outsider_b
):
    # A token claiming acme, naming globex's user: refused on globex although the user is there.
    _daily(outsider_b, "globex")
    with schema_context("acme"):
        token = unsubscribe_token(user=outsider_b)

    response = site_client(tenant_b).post(f"/unsubscribe/{token}/")

    assert response.status_code == 400
    assert _schedule(outsider_b, "globex").enabled is True


def test_a_link_for_a_deleted_user_is_refused(tenant_a, admin_a):
    with schema_context("acme"):
        gone = UserFactory(email="gone@acme.test")
    path = _link(gone)
    with schema_context("acme"):
        gone.delete()

    response = site_client(tenant_a).post(path)

    assert response.status_code == 400
    assert INVALID_PAGE in response.content.decode()


def test_the_operator_site_has_no_unsubscribe_page(tenant_a, member_a):
    _daily(member_a)

    response = site_client().post(_link(member_a))

    assert response.status_code == 404
    assert _schedule(member_a).enabled is True


# --- Old links, and digests already off ----------------------------------------------


def test_an_old_link_still_works_after_the_user_turned_digests_back_on(
    tenant_a, member_a, time_machine
):
    _daily(member_a)
    link = _link(member_a)
    site_client(tenant_a).post(link)
    time_machine.move_to(NOON_UTC + timedelta(days=400), tick=False)
    client = logged_in(tenant_a, member_a)
    client.post("/digest/", {"frequency": "daily", "hour": "7", "timezone": "Europe/Berlin"})
    assert _schedule(member_a).enabled is True

    response = site_client(tenant_a).post(link)

    assert response.status_code == 200
    assert (_schedule(member_a).enabled, _schedule(member_a).next_due_at) == (False, None)
    assert len(_unsubscribed_events()) == 2


def test_a_user_who_never_had_a_digest_gets_the_confirmation_and_nothing_is_recorded(
    tenant_a, member_a
):
    response = site_client(tenant_a).post(_link(member_a))

    assert response.status_code == 200
    assert "You will get no more digests from Acme Corp" in response.content.decode()
    assert _schedule(member_a) is None
    assert _unsubscribed_events("public") == []


@pytest.mark.parametrize(
    "setting", [{"frequency": "off"}, {"frequency": "daily", "enabled": False}]
)
def test_a_digest_already_off_is_left_alone_and_nothing_is_recorded(tenant_a, member_a, setting):
    with schema_context("acme"):
        before = user_schedule_update(user=member_a, hour=7, **setting)

    response = site_client(tenant_a).post(_link(member_a))

    assert response.status_code == 200
    assert "You will get no more digests from Acme Corp" in response.content.decode()
    after = _schedule(member_a)
    assert (after.frequency, after.enabled, after.updated_at) == (
        before.frequency,
        before.enabled,
        before.updated_at,
    )
    assert _unsubscribed_events("public") == []


def test_a_deactivated_user_can_still_unsubscribe(tenant_a, member_a):
    _daily(member_a)
    with schema_context("acme"):
        member_a.is_active = False
        member_a.save(update_fields=["is_active"])

    response = site_client(tenant_a).post(_link(member_a))

    assert response.status_code == 200
    assert _schedule(member_a).enabled is False


def test_the_service_returns_the_schedule_it_turned_off(tenant_a, member_a):
    _daily(member_a)

    with schema_context("acme"):
        schedule = digest_unsubscribe(user=member_a)

    assert (schedule.enabled, schedule.next_due_at, schedule.frequency) == (False, None, "daily")
