"""The tenant admins' sync settings page: source, write-only token, interval and time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling.audit.models import Action, AuditEvent
from scheduling.forms import SyncSettingsForm
from tenants.models import Tenant
from tenants.services import tenant_pause, tenant_settings_update
from tenants.validators import iana_time_zones
from tests.conftest import logged_in, site_client
from tests.scheduling.sync_pages import csrf_logged_in, shown_messages, sync_task, text

pytestmark = pytest.mark.django_db

URL = "/sync/settings/"
NOW = datetime(2026, 11, 21, 13, 5, tzinfo=UTC)  # a Saturday


def _data(**changes) -> dict:
    return {
        "source_kind": "demo",
        "source_url": "",
        "source_token": "",
        "sync_interval": "15m",
        "timezone": "Europe/Berlin",
        **changes,
    }


def _stored(slug: str = "acme") -> Tenant:
    return Tenant.objects.get(schema_name=slug)


def _row(tenant: Tenant) -> tuple:
    return (
        tenant.source_kind,
        tenant.source_url,
        tenant.source_token,
        tenant.sync_interval,
        tenant.timezone,
    )


def _task_state(slug: str = "acme") -> tuple:
    task = PeriodicTask.objects.get(name=f"tenant:{slug}:sync")
    return (task.interval_id, task.enabled, task.date_changed)


def _settings_events(tenant) -> list[AuditEvent]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action=Action.TENANT_SETTINGS_CHANGED))


def _field_errors(response, name: str) -> list[str]:
    html = response.content.decode()
    found = re.search(rf'<ul class="errorlist" id="id_{name}_error">(.*?)</ul>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", found.group(1)) if found else []


# --- Who may use it ---------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    response = site_client(tenant_a).get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={URL}"


def test_members_get_403_and_change_nothing(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)
    before = _row(_stored())

    assert client.get(URL).status_code == 403
    assert client.post(URL, _data(sync_interval="1h")).status_code == 403
    assert _row(_stored()) == before


def test_a_session_from_another_tenants_site_is_no_session_here(tenant_a, tenant_b, outsider_b):
    client = logged_in(tenant_b, outsider_b)

    response = client.post(URL, _data(sync_interval="1h"), HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert _stored().sync_interval == timedelta(minutes=15)


def test_a_forged_post_without_a_csrf_token_is_refused(tenant_a, admin_a):
    client = csrf_logged_in(tenant_a, admin_a)

    response = client.post(URL, _data(sync_interval="1h"))

    assert response.status_code == 403
    assert _stored().sync_interval == timedelta(minutes=15)


def test_tenant_fields_in_post_data_are_ignored(tenant_a, tenant_b, admin_a):
    client = logged_in(tenant_a, admin_a)

    client.post(
        URL,
        _data(
            sync_interval="1h",
            tenant=str(tenant_b.public_id),
            schema_name="globex",
            status="paused",
            name="Hijacked",
        ),
    )

    acme, globex = _stored("acme"), _stored("globex")
    assert (acme.sync_interval, acme.status, acme.name) == (
        timedelta(hours=1),
        "active",
        "Acme Corp",
    )
    assert globex.sync_interval == timedelta(minutes=15)


# --- The form as shown ---------------------------------------------------------------


def test_the_page_shows_the_current_settings_and_next_run(tenant_a, admin_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(last_run_at=NOW)
    client = logged_in(tenant_a, admin_a)

    with time_machine.travel(NOW, tick=False):
        response = client.get(URL)
    html = response.content.decode()

    assert response.status_code == 200
    assert '<label for="id_sync_interval">Sync interval</label>' in html
    assert 'name="sync_interval" value="15m"' in html
    assert '<option selected value="Europe/Berlin">Europe/Berlin</option>' in html
    assert html.count("<option ") == len(iana_time_zones()) + len(Tenant.SourceKind)
    assert '<option value="demo" selected>' in html
    assert '<label for="id_clear_source_token">Clear the stored token</label>' in html
    assert ">Save settings</button>" in html
    assert re.search(
        r'id="next-run">\s*<time[^>]*>Sat 21 Nov 2026, 14:20 CET \(Europe/Berlin\)', html
    )
    assert "Next run: Sat 21 Nov 2026, 14:20 CET (Europe/Berlin)" in text(response)
    assert "No token stored." in text(response)


def test_a_stored_token_is_announced_but_never_shown(tenant_a, admin_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(source_token="s3cret-token-value")

    response = logged_in(tenant_a, admin_a).get(URL)
    html = response.content.decode()

    assert "A token is stored." in text(response)
    assert "s3cret-token-value" not in html
    assert re.search(r'<input type="password" name="source_token"[^>]*>', html)
    assert 'name="source_token" value' not in html


def test_a_paused_tenant_shows_paused_as_its_next_run(tenant_a, admin_a):
    tenant_pause(tenant=tenant_a)

    response = logged_in(tenant_a, admin_a).get(URL)

    assert "Next run: Paused" in text(response)


def test_the_page_costs_a_fixed_number_of_queries(tenant_a, admin_a, django_assert_num_queries):
    client = logged_in(tenant_a, admin_a)

    # Domain, session, user and the sync task, and two SET search_path.
    with django_assert_num_queries(6):
        response = client.get(URL)

    assert response.status_code == 200


# --- Saving ---------------------------------------------------------------------------


def test_saving_updates_the_tenant_its_sync_task_and_the_audit_trail(tenant_a, admin_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(last_run_at=NOW)
    client = logged_in(tenant_a, admin_a)

    with time_machine.travel(NOW, tick=False):
        response = client.post(
            URL,
            _data(
                source_kind="http_json",
                source_url="https://feeds.example.test/acme.json",
                source_token="tok-123",
                sync_interval="1 hour",
                timezone="Asia/Tokyo",
            ),
            follow=True,
        )

    stored = _stored()
    assert response.redirect_chain == [(URL, 302)]
    assert shown_messages(response) == ["Saved. Next sync: Sat 21 Nov 2026, 23:05 JST (Asia/Tokyo)"]
    assert _row(stored) == (
        "http_json",
        "https://feeds.example.test/acme.json",
        "tok-123",
        timedelta(hours=1),
        "Asia/Tokyo",
    )
    task = sync_task(tenant_a)
    assert (task.interval.every, task.interval.period, task.enabled) == (3600, "seconds", True)
    [event] = _settings_events(tenant_a)
    assert event.actor_label == "admin@acme.test"
    assert event.after == {
        "timezone": "Asia/Tokyo",
        "sync_interval": 3600,
        "source_kind": "http_json",
        "source_url": "https://feeds.example.test/acme.json",
        "source_token": "set",
    }
    assert "tok-123" not in str(event.before) + str(event.after)
    assert "A token is stored." in text(response)
    assert 'value="1h"' in response.content.decode()


def test_a_blank_token_keeps_the_stored_one(tenant_a, admin_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(source_token="keep-me")
    client = logged_in(tenant_a, admin_a)

    client.post(URL, _data(sync_interval="30m"))

    assert (_stored().source_token, _stored().sync_interval) == ("keep-me", timedelta(minutes=30))


def test_the_clear_checkbox_clears_the_stored_token(tenant_a, admin_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(source_token="drop-me")
    client = logged_in(tenant_a, admin_a)

    response = client.post(URL, _data(clear_source_token="on"), follow=True)

    assert _stored().source_token == ""
    assert "No token stored." in text(response)
    [event] = _settings_events(tenant_a)
    assert (event.before, event.after) == ({"source_token": "set"}, {"source_token": "cleared"})


def test_saving_unchanged_settings_writes_nothing(tenant_a, admin_a):
    before = _task_state()
    client = logged_in(tenant_a, admin_a)

    response = client.post(URL, _data(), follow=True)

    assert shown_messages(response)[0].startswith("Saved. Next sync: ")
    assert _task_state() == before
    assert _settings_events(tenant_a) == []


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"sync_interval": "soon"}, "sync_interval", "is not an interval"),
        ({"sync_interval": "0s"}, "sync_interval", "longer than zero seconds"),
        (
            {"sync_interval": "8 days"},
            "sync_interval",
            "The sync interval must be between 1 second and 1 week.",
        ),
        ({"sync_interval": ""}, "sync_interval", "This field is required."),
        (
            {"timezone": "Mars/Olympus_Mons"},
            "timezone",
            "Mars/Olympus_Mons is not an IANA time zone name, such as Europe/Berlin or UTC.",
        ),
        ({"source_kind": "ftp"}, "source_kind", "Select a valid choice."),
        (
            {"source_kind": "http_json", "source_url": ""},
            "source_url",
            "A JSON-over-HTTP source needs a URL.",
        ),
        ({"source_url": "ftp://files.example.test/x"}, "source_url", "Enter a valid URL."),
        (
            {"source_token": "new", "clear_source_token": "on"},
            "clear_source_token",
            "Either enter a new token or clear the stored one, not both.",
        ),
        ({"source_token": "x" * 501}, "source_token", "at most 500 characters"),
    ],
)
def test_bad_input_is_shown_beside_its_field_and_nothing_is_saved(
    tenant_a, admin_a, changes, field, error
):
    Tenant.objects.filter(pk=tenant_a.pk).update(source_token="old")
    before, task_before = _row(_stored()), _task_state()
    client = logged_in(tenant_a, admin_a)

    response = client.post(URL, _data(**{"sync_interval": "2h", "timezone": "UTC", **changes}))

    assert response.status_code == 200
    [shown] = _field_errors(response, field)
    assert error in shown
    html = response.content.decode()
    assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', html) or re.search(
        rf'aria-invalid="true"[^>]*name="{field}"', html
    )
    assert _row(_stored()) == before
    assert _task_state() == task_before
    assert _settings_events(tenant_a) == []
    assert "old" not in re.findall(r'value="([^"]*)"', html)


def test_an_empty_post_is_answered_with_errors_not_a_blank_form(tenant_a, admin_a):
    response = logged_in(tenant_a, admin_a).post(URL, {})

    assert response.status_code == 200
    assert _field_errors(response, "sync_interval") == ["This field is required."]
    assert _stored().sync_interval == timedelta(minutes=15)


def test_the_service_checks_the_models_rules_before_writing(tenant_a):
    before, task_before = _row(_stored()), _task_state()

    with pytest.raises(ValidationError) as caught:
        tenant_settings_update(
            tenant=tenant_a,
            source_kind="http_json",
            source_url="",
            source_token="new",
            sync_interval=timedelta(seconds=0),
            timezone=ZoneInfo("Asia/Tokyo"),
        )

    assert "A JSON-over-HTTP source needs a URL." in caught.value.messages
    assert "sync_interval" in caught.value.message_dict
    assert _row(tenant_a) == before  # the caller's instance too
    assert _row(_stored()) == before
    assert _task_state() == task_before


# --- The form's conversions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("15 minutes", 900),
        ("1 hour", 3600),
        ("90s", 90),
        ("1h30m", 5400),
        ("1 hour and 30 mins", 5400),
        ("every 2 days", 172800),
        ("1 Week", 604800),
        ("120", 120),
    ],
)
def test_the_interval_is_read_as_people_write_it(written, seconds):
    form = SyncSettingsForm(_data(sync_interval=written))

    assert form.is_valid(), form.errors
    assert form.cleaned_data["sync_interval"] == timedelta(seconds=seconds)
    assert form.cleaned_data["timezone"].key == "Europe/Berlin"
