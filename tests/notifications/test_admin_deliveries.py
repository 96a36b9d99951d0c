"""The operators' delivery search: every tenant's deliveries, read from the public
DeliveryLog copies that notifications.delivery writes, and nothing to change there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from notifications.delivery import delivery_save
from notifications.models import DeliveryStatus, DigestDelivery, WebhookDelivery
from notifications.platform.admin import CappedCountPaginator, DeliveryLogAdmin
from notifications.platform.models import DeliveryLog
from tenants.accounts.models import User
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/admin/notifications_platform/deliverylog/"
PERIOD = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
HOOK_ACME = "https://hooks.example.com/acme/in"
HOOK_GLOBEX = "https://hooks.globex.example/sync"


def _digest(user, schema: str, *, hours: int = 0, **fields) -> DigestDelivery:
    """A digest for `user`'s period PERIOD + hours, saved with its public copy."""
    period = PERIOD + timedelta(hours=hours)
    values = {
        "recipient": user.email,
        "status": DeliveryStatus.SENT,
        "sent_at": period,
        "provider_message_id": f"<digest-{uuid.uuid4().hex}@scheduler.test>",
        "attempts": 1,
    }
    with schema_context(schema):
        delivery = DigestDelivery(
            user=user, period=period, since=period - timedelta(days=1), until=period
        )
        for name, value in (values | fields).items():
            setattr(delivery, name, value)
        delivery_save(delivery)
    return delivery


def _webhook(schema: str, **fields) -> WebhookDelivery:
    """A test POST to the tenant's webhook, saved with its public copy."""
    values = {"recipient": HOOK_GLOBEX, "status": DeliveryStatus.QUEUED, "attempts": 1}
    with schema_context(schema):
        delivery = WebhookDelivery(kind=WebhookDelivery.Kind.TEST, payload={"test": True})
        for name, value in (values | fields).items():
            setattr(delivery, name, value)
        delivery_save(delivery)
    return delivery


@pytest.fixture
def deliveries(tenant_a, tenant_b, member_a, outsider_b):
    """acme: a sent and a failed digest; globex: a sent digest and a failed test webhook."""
    sent = _digest(member_a, "acme", hours=0)
    bounced = _digest(
        member_a,
        "acme",
        hours=1,
        status=DeliveryStatus.FAILED,
        sent_at=None,
        provider_message_id="",
        last_error="550 5.1.1 mailbox unavailable " * 5,
    )
    theirs = _digest(outsider_b, "globex", hours=2)
    hook = _webhook(
        "globex",
        status=DeliveryStatus.FAILED,
        response_code=404,
        last_error="The webhook answered HTTP 404.",
        provider_message_id="evt_42",
    )
    return {"sent": sent, "bounced": bounced, "theirs": theirs, "hook": hook}


def _listed(response) -> list[uuid.UUID]:
    return [log.delivery_public_id for log in response.context["cl"].result_list]


def _ids(deliveries: dict, *names: str) -> list[uuid.UUID]:
    return [deliveries[name].public_id for name in names]


# --- What operators see -----------------------------------------------------------------


def test_an_operator_sees_the_deliveries_of_every_tenant_newest_first(
    tenant_a, tenant_b, deliveries, operator_client
):
    response = operator_client.get(URL)

    assert response.status_code == 200
    assert _listed(response) == _ids(deliveries, "hook", "theirs", "bounced", "sent")
    html = response.content.decode()
    assert f'<a href="/admin/tenants/tenant/{tenant_a.pk}/change/">Acme Corp</a>' in html
    assert f'<a href="/admin/tenants/tenant/{tenant_b.pk}/change/">Globex</a>' in html
    assert "Created (UTC)" in html and "Response code" in html
    assert '<td class="field-status">Failed</td>' in html
    assert '<td class="field-status">Sent</td>' in html
    assert '<td class="field-channel">Webhook</td>' in html
    assert '<td class="field-topic">test</td>' in html
    assert '<td class="field-response">404</td>' in html
    assert '<td class="field-attempts">1</td>' in html
    error = "550 5.1.1 mailbox unavailable " * 5
    assert f'<span title="{error}">{error[:79]}…</span>' in html
    created = deliveries["hook"].created_at.astimezone(UTC)
    assert f"{created:%Y-%m-%d %H:%M:%S}" in html


def test_the_deliveries_are_reachable_from_the_admin_index(operator_client):
    html = operator_client.get("/admin/").content.decode()

    assert f'<a href="{URL}">Deliveries</a>' in html


def _search(client: Client, term: str) -> list[uuid.UUID]:
    response = client.get(URL, {"q": term})
    assert response.status_code == 200
    return _listed(response)


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("member@acme.test", ["bounced", "sent"]),
        ("  MEMBER@Acme.TEST ", ["bounced", "sent"]),  # any case, spaces trimmed
        ("member@", ["bounced", "sent"]),  # the beginning of an address
        ("https://hooks.globex", ["hook"]),  # the beginning of a URL
        ("acme.test", []),  # not the middle of an address: no index could serve that
        ("globex", ["hook", "theirs"]),  # a tenant's slug
        ("GLOBEX", ["hook", "theirs"]),
        ("Acme", ["bounced", "sent"]),  # the beginning of a tenant's name
        ("Acme Corp", ["bounced", "sent"]),
        ("evt_42", ["hook"]),  # a webhook receiver's id
        ("evt_", []),  # ids are whole, and _ is no wildcard
        ("%", []),  # nor is %
        ("nobody@nowhere.test", []),
    ],
)
def test_a_search_finds_deliveries_by_address_tenant_or_provider_id(
    deliveries, operator_client, term, expected
):
    assert _search(operator_client, term) == _ids(deliveries, *expected)


def test_a_search_finds_a_delivery_by_its_public_id(deliveries, operator_client):
    public_id = deliveries["theirs"].public_id

    assert _search(operator_client, str(public_id)) == [public_id]
    assert _search(operator_client, public_id.hex.upper()) == [public_id]
    assert _search(operator_client, str(uuid.uuid4())) == []


def test_a_search_finds_an_email_by_its_message_id_with_or_without_brackets(
    deliveries, operator_client
):
    message_id = deliveries["sent"].provider_message_id

    assert _search(operator_client, message_id) == [deliveries["sent"].public_id]
    assert _search(operator_client, message_id.strip("<>")) == [deliveries["sent"].public_id]


@pytest.mark.parametrize("term", ["x" * 2000, "'; DROP TABLE x; --", "<>", "<", "\\"])
def test_odd_search_input_finds_nothing_and_breaks_nothing(deliveries, operator_client, term):
    assert _search(operator_client, term) == []
    assert DeliveryLog.objects.count() == 4


@pytest.mark.parametrize(
    "query", [{"q": "member\x00@acme.test"}, {"tenant": "\x00"}, {"status": "\x00"}]
)
def test_a_nul_byte_anywhere_in_the_query_is_a_bad_request(deliveries, operator_client, query):
    # config.middleware.NulCharacterGuardMiddleware answers before the admin runs.
    assert operator_client.get(URL, query).status_code == 400


@pytest.mark.parametrize(
    "query",
    [{"recipient": "member@acme.test"}, {"last_error__contains": "x"}],
)
def test_a_hand_made_field_lookup_is_a_bad_request(deliveries, operator_client, query):
    assert operator_client.get(URL, query).status_code == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"channel": "webhook"}, ["hook"]),
        ({"channel": "email"}, ["theirs", "bounced", "sent"]),
        ({"status": "failed"}, ["hook", "bounced"]),
        ({"status": "sent", "channel": "email"}, ["theirs", "sent"]),
        ({"topic": "test"}, ["hook"]),
        ({"topic": "digest"}, ["theirs", "bounced", "sent"]),
        ({"topic": "sync run"}, []),
        ({"status": "failed", "q": "globex"}, ["hook"]),
    ],
)
def test_the_filters_narrow_the_list(deliveries, operator_client, query, expected):
    response = operator_client.get(URL, query)

    assert response.status_code == 200
    assert _listed(response) == _ids(deliveries, *expected)


def test_the_tenant_filter_shows_one_tenants_deliveries_by_its_public_id(
    tenant_b, deliveries, operator_client
):
    response = operator_client.get(URL, {"tenant": str(tenant_b.public_id)})

    assert _listed(response) == _ids(deliveries, "hook", "theirs")
    html = response.content.decode()
    assert "By tenant" in html and "Globex" in html


@pytest.mark.parametrize(
    "query",
    [
        {"tenant": "not-a-uuid"},
        {"tenant": str(uuid.uuid4())},
        {"topic": "bogus"},
        {"status": "bogus"},
        {"channel": "carrier-pigeon"},
    ],
)
def test_a_bad_filter_value_lists_nothing_instead_of_failing(deliveries, operator_client, query):
    response = operator_client.get(URL, query, follow=True)

    assert response.status_code == 200
    assert _listed(response) == []


def test_past_the_count_cap_the_list_says_how_many_it_counted(
    deliveries, operator_client, monkeypatch
):
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)

    response = operator_client.get(URL)

    assert len(_listed(response)) == 4  # the page itself is not capped
    assert "3+ deliveries" in response.content.decode()
    monkeypatch.setattr(CappedCountPaginator, "cap", 4)
    assert "4 deliveries" in operator_client.get(URL).content.decode()


def test_a_delivery_opens_read_only(tenant_b, deliveries, operator_client):
    log = DeliveryLog.objects.get(delivery_public_id=deliveries["hook"].public_id)

    response = operator_client.get(f"{URL}{log.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "The webhook answered HTTP 404." in html and "evt_42" in html
    assert 'name="_save"' not in html and "/delete/" not in html


def test_a_tenant_page_links_to_its_deliveries(tenant_a, operator_client):
    html = operator_client.get(f"/admin/tenants/tenant/{tenant_a.pk}/change/").content.decode()

    assert f'href="{URL}?tenant={tenant_a.public_id}">Deliveries</a>' in html


def test_the_run_overview_of_a_tenant_links_to_its_deliveries(tenant_a, operator_client):
    query = {"tenant": str(tenant_a.public_id)}
    html = operator_client.get("/admin/scheduling_platform/syncfailure/", query).content.decode()

    assert f'href="{URL}?tenant={tenant_a.public_id}">Its deliveries</a>' in html


# --- Cost -------------------------------------------------------------------------------

# One SET search_path (public) and then: the session, the user, the capped count, the page.
LIST_QUERIES = 1 + 4
# Searching reads the matching tenants first; the tenant filter reads its tenant.
SEARCH_QUERIES = LIST_QUERIES + 1


def test_the_list_reads_a_fixed_number_of_queries_however_many_rows(
    member_a, outsider_b, tenant_b, operator_client, django_assert_num_queries
):
    _digest(member_a, "acme")
    with django_assert_num_queries(LIST_QUERIES):
        assert len(_listed(operator_client.get(URL))) == 1

    for hours in range(1, 15):
        _digest(member_a, "acme", hours=hours)
        _digest(outsider_b, "globex", hours=hours)
    _webhook("globex")
    with django_assert_num_queries(LIST_QUERIES):
        assert len(_listed(operator_client.get(URL))) == 30
    with django_assert_num_queries(SEARCH_QUERIES):
        assert len(_listed(operator_client.get(URL, {"q": "Globex"}))) == 15
    with django_assert_num_queries(SEARCH_QUERIES):
        assert len(_listed(operator_client.get(URL, {"tenant": str(tenant_b.public_id)}))) == 15


def _plan(queryset) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned anyway
    return queryset.explain()


def _searched(term: str):
    queryset, _ = DeliveryLogAdmin(DeliveryLog, None).get_search_results(
        None, DeliveryLog.objects.all(), term
    )
    return queryset


def test_each_search_and_filter_can_be_served_by_an_index(tenant_a, deliveries):
    by_address = _plan(_searched("Member@acme.test"))
    assert "deliverylog_recipient" in by_address and "deliverylog_provider_id" in by_address
    assert "deliverylog_tenant_created" not in by_address  # no tenant of that name
    assert "deliverylog_tenant_created" in _plan(_searched("acme"))
    by_id = _plan(_searched(str(deliveries["sent"].public_id)))
    assert "delivery_public_id_key" in by_id
    assert "deliverylog_failed_created" in _plan(DeliveryLog.objects.filter(status="failed"))
    assert "deliverylog_tenant_created" in _plan(DeliveryLog.objects.filter(tenant=tenant_a))


# --- Who may see it and what they may do -----------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(deliveries):
    response = site_client().get(URL, follow=True)

    assert response.redirect_chain[-1][0].startswith("/login/")
    assert "member@acme.test" not in response.content.decode()


def test_a_signed_in_user_who_is_not_staff_is_sent_to_sign_in(deliveries):
    user = User.objects.create_user("someone@platform.test", PASSWORD)
    client = Client(HTTP_HOST=settings.BASE_DOMAIN)
    client.force_login(user)

    response = client.get(URL)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_tenant_users_find_no_admin_on_their_own_sites(tenant_a, admin_a, tenant_b, outsider_b):
    for tenant, user in ((tenant_a, admin_a), (tenant_b, outsider_b)):
        assert logged_in(tenant, user).get(URL).status_code == 404


def test_a_tenant_session_does_not_sign_in_on_the_operator_site(tenant_b, outsider_b, deliveries):
    client = logged_in(tenant_b, outsider_b)

    response = client.get(URL, HTTP_HOST=settings.BASE_DOMAIN)

    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_staff_without_the_view_permission_are_refused(deliveries):
    User.objects.create_user("helpdesk@platform.test", PASSWORD, is_staff=True)
    client = site_client()
    client.post("/login/", {"username": "helpdesk@platform.test", "password": PASSWORD})

    response = client.get(URL)

    assert response.status_code == 403
    assert "member@acme.test" not in response.content.decode()


def test_staff_with_only_the_view_permission_can_search(deliveries):
    helpdesk = User.objects.create_user("helpdesk@platform.test", PASSWORD, is_staff=True)
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_deliverylog"))
    client = Client(HTTP_HOST=settings.BASE_DOMAIN)
    client.force_login(helpdesk)

    response = client.get(URL, {"q": "member@acme.test"})

    assert _listed(response) == _ids(deliveries, "bounced", "sent")


def test_deliveries_cannot_be_added_changed_or_deleted(deliveries, operator_client):
    log = DeliveryLog.objects.get(delivery_public_id=deliveries["bounced"].public_id)
    change = f"{URL}{log.pk}/change/"

    assert operator_client.get(f"{URL}add/").status_code == 403
    edited = {"recipient": "someone@else.test", "status": "sent", "attempts": "9"}
    assert operator_client.post(change, edited).status_code == 403
    assert operator_client.post(f"{URL}{log.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [log.pk]}
    assert operator_client.post(URL, bulk).status_code != 500
    log.refresh_from_db()
    assert (log.recipient, log.status, log.attempts) == ("member@acme.test", "failed", 1)
    assert DeliveryLog.objects.count() == 4
