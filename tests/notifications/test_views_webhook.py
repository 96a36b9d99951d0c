"""The tenant admins' Webhook page: the URL, the secret shown once, rotation, a test
delivery, the failing notice and the latest deliveries; nobody else gets anything."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import override_settings
from django_tenants.utils import schema_context

from notifications.models import WebhookDelivery
from notifications.webhooks import webhook_settings_update
from scheduling.audit.models import AuditEvent
from tenants.models import Tenant
from tests.conftest import logged_in, site_client
from tests.scheduling.sync_pages import csrf_logged_in, runs_create, shown_messages, text

pytestmark = pytest.mark.django_db

URL = "/webhook/"
HOOK = "https://93.184.215.14/hooks/sync"  # a public address: no DNS needed
NOON = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)  # 14:00 CEST in Berlin
POSTS = {
    URL: {"webhook_url": HOOK},
    "/webhook/rotate/": {},
    "/webhook/test/": {},
}


def _stored(slug: str = "acme") -> Tenant:
    return Tenant.objects.get(schema_name=slug)


def _deliveries(tenant, count: int, **fields) -> list[WebhookDelivery]:
    """`count` test deliveries in the tenant's schema, a minute apart, the newest at NOON."""
    with schema_context(tenant.schema_name):
        made = []
        for index in range(count):
            with time_machine.travel(NOON - timedelta(minutes=index), tick=False):
                made.append(WebhookDelivery.objects.create(kind="test", **fields))
        return made


def _rows(response) -> list[str]:
    html = response.content.decode()
    body = re.search(r'<table id="webhook-deliveries".*?<tbody>(.*?)</tbody>', html, re.S)
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


# --- Who gets in ----------------------------------------------------------------


@pytest.mark.parametrize("path", [URL, "/webhook/deliveries/"])
def test_anonymous_visitors_are_sent_to_login(tenant_a, path):
    response = site_client(tenant_a).get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.parametrize("path", [URL, "/webhook/deliveries/", "/webhook/rotate/"])
def test_a_session_from_another_tenants_site_is_no_session_here(
    tenant_a, tenant_b, outsider_b, path
):
    webhook_settings_update(tenant=tenant_a, url=HOOK)
    secret = _stored().webhook_secret
    client = logged_in(tenant_b, outsider_b)

    response = client.post(path, HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"
    assert _stored().webhook_secret == secret


def test_members_get_403_everywhere_and_change_nothing(tenant_a, member_a):
    webhook_settings_update(tenant=tenant_a, url=HOOK)
    before = _stored()
    client = logged_in(tenant_a, member_a)

    assert client.get(URL).status_code == 403
    assert client.get("/webhook/deliveries/").status_code == 403
    for path, data in POSTS.items():
        assert client.post(path, data | {"webhook_url": ""}).status_code == 403
    after = _stored()
    assert (after.webhook_url, after.webhook_secret) == (before.webhook_url, before.webhook_secret)
    with schema_context("acme"):
        assert not WebhookDelivery.objects.exists()
    assert 'href="/webhook/"' not in client.get("/").content.decode()


@pytest.mark.parametrize("path", list(POSTS))
def test_posts_without_a_csrf_token_are_refused(tenant_a, admin_a, path):
    webhook_settings_update(tenant=tenant_a, url="https://93.184.215.14/old")
    secret = _stored().webhook_secret
    client = csrf_logged_in(tenant_a, admin_a)

    response = client.post(path, POSTS[path])

    assert response.status_code == 403
    assert (_stored().webhook_url, _stored().webhook_secret) == (
        "https://93.184.215.14/old",
        secret,
    )
    with schema_context("acme"):
        assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize("path", ["/webhook/rotate/", "/webhook/test/"])
def test_the_actions_only_take_posts(tenant_a, admin_a, path):
    assert logged_in(tenant_a, admin_a).get(path).status_code == 405


def test_each_tenant_sees_only_its_own_deliveries(tenant_a, tenant_b, admin_a, outsider_b):
    _deliveries(tenant_a, 2, last_error="acme only")
    _deliveries(tenant_b, 1)

    acme = logged_in(tenant_a, admin_a).get(URL)
    globex = logged_in(tenant_b, outsider_b).get(URL)

    assert len(_rows(acme)) == 2 and len(_rows(globex)) == 1
    assert "acme only" not in globex.content.decode()


# --- The URL and its secret -----------------------------------------------------


def test_an_admin_sets_a_url_and_sees_the_new_secret_once(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    page = client.get(URL)
    assert 'aria-current="page">Webhook</a>' in page.content.decode()
    assert "No secret yet" in text(page)
    assert "Send test delivery" not in text(page)

    response = client.post(URL, {"webhook_url": HOOK})
    first, second = client.get(URL), client.get(URL)
    secret = _stored().webhook_secret

    assert response.status_code == 302 and response["Location"] == URL
    assert _stored().webhook_url == HOOK
    assert shown_messages(first) == ["Saved."]
    assert f'<code id="webhook-secret" class="secret">{secret}</code>' in first.content.decode()
    assert "Copy this secret now: it is not shown again." in text(first)
    assert secret not in second.content.decode()
    assert f"••••••••{secret[-4:]}" in text(second)
    assert "Send test delivery" in text(second)
    assert "no-store" in first["Cache-Control"]
    assert AuditEvent.objects.filter(action="tenant.settings_changed", tenant_slug="acme").exists()


def test_a_host_without_a_scheme_is_taken_as_https(tenant_a, admin_a):
    logged_in(tenant_a, admin_a).post(URL, {"webhook_url": "93.184.215.14/hooks"})

    assert _stored().webhook_url == "https://93.184.215.14/hooks"


def test_clearing_the_url_turns_the_webhook_off_and_keeps_the_secret(tenant_a, admin_a):
    webhook_settings_update(tenant=tenant_a, url=HOOK)
    secret = _stored().webhook_secret
    client = logged_in(tenant_a, admin_a)

    response = client.post(URL, {"webhook_url": ""}, follow=True)

    assert shown_messages(response) == ["Saved. Webhook off."]
    assert (_stored().webhook_url, _stored().webhook_secret) == ("", secret)
    assert "Send test delivery" not in text(response)


@override_settings(SYNC_FETCH_ALLOW_LOOPBACK=False, SYNC_FETCH_ALLOW_PRIVATE=False)
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.5/hook", "10.0.0.5 resolves to 10.0.0.5, a private or local address;"),
        ("http://127.0.0.1:8000/hook", "127.0.0.1 resolves to 127.0.0.1, a private or local"),
        ("ftp://93.184.215.14/hook", "Enter an http:// or https:// URL."),
        ("not a url at all", "Enter an http:// or https:// URL."),
        ("https://93.184.215.14/" + "x" * 600, "Ensure this value has at most 500 characters"),
    ],
)
def test_a_bad_or_private_url_is_refused_beside_the_field_and_nothing_is_saved(
    tenant_a, admin_a, url, message
):
    response = logged_in(tenant_a, admin_a).post(URL, {"webhook_url": url})
    html = response.content.decode()

    assert response.status_code == 200
    assert re.search(
        r'name="webhook_url"[^>]*aria-invalid="true"[^>]*>\s*<ul class="errorlist" '
        r'id="id_webhook_url_error"><li>' + re.escape(message),
        html,
    ), html
    assert (_stored().webhook_url, _stored().webhook_secret) == ("", "")
    assert not AuditEvent.objects.filter(action="tenant.settings_changed").exists()


def test_rotating_shows_the_new_secret_once_and_warns_about_receivers(tenant_a, admin_a):
    webhook_settings_update(tenant=tenant_a, url=HOOK)
    old = _stored().webhook_secret
    client = logged_in(tenant_a, admin_a)
    assert "your receivers need the new secret to verify deliveries" in text(client.get(URL))

    response = client.post("/webhook/rotate/", follow=True)
    new = _stored().webhook_secret

    assert new != old
    assert f'<code id="webhook-secret" class="secret">{new}</code>' in response.content.decode()
    assert shown_messages(response) == [
        "New secret created. Give it to your receivers: the old one no longer verifies."
    ]
    assert new not in client.get(URL).content.decode()
    event = AuditEvent.objects.get(action="webhook.secret_rotated")
    assert event.actor_label == "admin@acme.test" and new not in str(event.after)


# --- Test deliveries, the failing notice and the deliveries table ------------------


def test_send_test_delivery_queues_a_test_delivery(tenant_a, admin_a):
    webhook_settings_update(tenant=tenant_a, url=HOOK)

    response = logged_in(tenant_a, admin_a).post("/webhook/test/", follow=True)

    assert shown_messages(response) == ["Test delivery queued. It appears below in a moment."]
    with schema_context("acme"):
        delivery = WebhookDelivery.objects.get()
    assert (delivery.kind, delivery.status, delivery.recipient) == ("test", "queued", HOOK)
    assert _rows(response)[0].split()[6:8] == ["Test", "Queued"]


def test_a_test_delivery_without_a_url_is_explained(tenant_a, admin_a):
    response = logged_in(tenant_a, admin_a).post("/webhook/test/", follow=True)

    assert shown_messages(response) == ["Set a webhook URL before sending a test delivery."]
    with schema_context("acme"):
        assert not WebhookDelivery.objects.exists()


def test_a_failing_webhook_is_shown_in_red_with_its_reason(tenant_a, admin_a):
    Tenant.objects.filter(pk=tenant_a.pk).update(
        webhook_url=HOOK,
        webhook_failing_since=NOON,
        webhook_failure="The webhook answered HTTP 404: Not Found",
    )
    client = logged_in(tenant_a, admin_a)

    for response in (client.get(URL), client.get("/webhook/deliveries/")):
        notice = re.search(
            r'<p class="alert bad" id="webhook-failing" role="alert">(.*?)</p>',
            response.content.decode(),
            re.S,
        )
        assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", notice.group(1))).strip() == (
            "Failing since Mon 8 Jun 2026, 14:00 CEST (Europe/Berlin): "
            "The webhook answered HTTP 404: Not Found"
        )


def test_deliveries_are_listed_newest_first_in_the_tenants_zone(tenant_a, admin_a):
    [run] = runs_create(tenant_a, 1, newest=NOON)
    with schema_context("acme"), time_machine.travel(NOON + timedelta(minutes=5), tick=False):
        WebhookDelivery.objects.create(
            kind="run",
            sync_run=run,
            status="failed",
            attempts=1,
            response_code=404,
            last_error="The webhook answered HTTP 404: " + "y" * 200,
        )
    _deliveries(tenant_a, 1, status="sent", attempts=2, response_code=200, sent_at=NOON)

    response = logged_in(tenant_a, admin_a).get(URL)
    rows = _rows(response)

    assert "Queued (Europe/Berlin)" in text(response)
    assert rows[0].startswith("Mon 8 Jun 2026, 14:05:00 CEST Sync run Failed 404 1 ")
    assert rows[1] == "Mon 8 Jun 2026, 14:00:00 CEST Test Sent 200 2"
    assert re.search(
        r"<summary>The webhook answered HTTP 404: y+…</summary>", response.content.decode()
    )


def test_an_empty_list_says_so(tenant_a, admin_a):
    assert _rows(logged_in(tenant_a, admin_a).get(URL)) == ["No deliveries yet."]


def test_the_fragment_refreshes_itself_every_10_seconds(tenant_a, admin_a):
    _deliveries(tenant_a, 3)
    client = logged_in(tenant_a, admin_a)

    fragment = client.get("/webhook/deliveries/", HTTP_HX_REQUEST="true")
    page = client.get(URL)
    html = fragment.content.decode()

    assert re.match(
        r'\s*<div id="webhook-region" hx-get="/webhook/deliveries/" hx-trigger="every 10s"', html
    )
    assert "<html" not in html and "<form" not in html
    assert len(_rows(fragment)) == 3
    assert '<div id="webhook-region" hx-get="/webhook/deliveries/"' in page.content.decode()


@pytest.mark.parametrize("path", [URL, "/webhook/deliveries/"])
def test_the_page_costs_the_same_queries_with_1_or_30_deliveries(
    tenant_a, admin_a, django_assert_num_queries, path
):
    client = logged_in(tenant_a, admin_a)
    _deliveries(tenant_a, 1)
    # Domain, session, user, the latest deliveries, and two SET search_path.
    with django_assert_num_queries(6):
        one = client.get(path)
    _deliveries(tenant_a, 29)
    with django_assert_num_queries(6):
        many = client.get(path)

    assert (len(_rows(one)), len(_rows(many))) == (1, 25)
