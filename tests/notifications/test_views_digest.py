"""The "My digest" page: each user sets their own digest, sees the next three times in
their zone and their own past digests, and nobody reaches anyone else's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context
from pytest_django.asserts import assertInHTML, assertRedirects

from notifications.models import DigestDelivery
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tests.conftest import logged_in, site_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAGE = "/digest/"
PREVIEW = "/digest/preview/"
SATURDAY_1000_UTC = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)  # 11:00 CET in Berlin
WEEKLY_MONDAY_0800_BERLIN = {
    "frequency": "weekly",
    "weekday": "0",
    "hour": "8",
    "timezone": "Europe/Berlin",
}
NEXT_THREE_MONDAYS = [
    "Mon 23 Nov 2026, 08:00 CET",
    "Mon 30 Nov 2026, 08:00 CET",
    "Mon 7 Dec 2026, 08:00 CET",
]


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(SATURDAY_1000_UTC, tick=False)


def _schedule(user) -> UserSchedule | None:
    with schema_context("acme"):
        return UserSchedule.objects.filter(user=user).first()


def _delivery(user, *, period: datetime, **fields) -> DigestDelivery:
    values = {
        "since": period - timedelta(days=1),
        "until": period,
        "status": DigestDelivery.Status.SENT,
        "sent_at": period + timedelta(minutes=1),
        "record_count": 4,
    }
    return DigestDelivery.objects.create(user=user, period=period, **(values | fields))


def _preview_items(html: str) -> list[str]:
    section = re.search(r'<section id="digest-preview".*?</section>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", section.group(0) if section else html, re.S)


def _history_rows(html: str) -> list[list[str]]:
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S)
    if body is None:
        return []
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    strip = lambda cell: re.sub(r"<[^>]+>", "", cell).strip()  # noqa: E731
    return [[strip(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


# --- Who gets in ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), [("get", PAGE), ("post", PAGE), ("get", PREVIEW)])
def test_anonymous_visitors_are_sent_to_sign_in(tenant_a, method, url):
    response = getattr(site_client(tenant_a), method)(url)

    assertRedirects(response, f"/login/?next={url}", fetch_redirect_response=False)


def test_a_session_from_another_tenant_does_not_open_the_page(
    tenant_a, member_a, tenant_b, outsider_b
):
    client = logged_in(tenant_b, outsider_b)
    host = {"HTTP_HOST": tenant_a.primary_host}

    page = client.get(PAGE, **host)
    post = client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN, **host)
    preview = client.get(PREVIEW, **host)

    for response, url in ((page, PAGE), (post, PAGE), (preview, PREVIEW)):
        assertRedirects(response, f"/login/?next={url}", fetch_redirect_response=False)
    with schema_context("acme"):
        assert not UserSchedule.objects.exists()


def test_a_forged_post_without_a_csrf_token_is_refused(tenant_a, member_a):
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant_a.primary_host)
    with schema_context("acme"):
        client.force_login(member_a)

    response = client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN)

    assert response.status_code == 403
    assert _schedule(member_a) is None


def test_the_preview_answers_only_get(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).post(PREVIEW, WEEKLY_MONDAY_0800_BERLIN)

    assert response.status_code == 405


def test_a_posted_user_or_schedule_id_is_ignored(tenant_a, admin_a, member_a, frozen):
    with schema_context("acme"):
        theirs = user_schedule_update(user=member_a, frequency="daily", hour=7)
    forged = WEEKLY_MONDAY_0800_BERLIN | {
        "user": member_a.pk,
        "user_id": member_a.pk,
        "public_id": theirs.public_id,
    }

    response = logged_in(tenant_a, admin_a).post(PAGE, forged)

    assertRedirects(response, PAGE, fetch_redirect_response=False)
    mine, theirs_after = _schedule(admin_a), _schedule(member_a)
    assert (mine.frequency, mine.weekday, mine.hour) == ("weekly", 0, 8)
    assert (theirs_after.frequency, theirs_after.hour, theirs_after.weekday) == ("daily", 7, None)
    assert theirs_after.updated_at == theirs.updated_at


def test_no_address_names_a_schedule_not_even_another_tenants(
    tenant_a, admin_a, tenant_b, outsider_b
):
    with schema_context("globex"):
        theirs = user_schedule_update(user=outsider_b, frequency="daily", hour=7)
    client = logged_in(tenant_a, admin_a)

    assert client.get(f"{PAGE}{theirs.public_id}/").status_code == 404
    assert client.post(f"{PAGE}{theirs.public_id}/", WEEKLY_MONDAY_0800_BERLIN).status_code == 404
    with schema_context("globex"):
        assert UserSchedule.objects.get().frequency == "daily"


# --- The form ------------------------------------------------------------------------


def test_the_form_offers_the_labels_and_choices_people_read(tenant_a, member_a):
    html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    for field, label in [
        ("frequency", "Frequency"),
        ("weekday", "Day"),
        ("hour", "Hour"),
        ("timezone", "Time zone"),
    ]:
        assertInHTML(f'<label for="id_{field}">{label}</label>', html)
    assertInHTML('<option value="off" selected>Off</option>', html)
    for value, label in [("hourly", "Hourly"), ("daily", "Daily"), ("weekly", "Weekly")]:
        assertInHTML(f'<option value="{value}">{label}</option>', html)
    assertInHTML('<option value="6">Sunday</option>', html)
    assertInHTML('<option value="0">00:00</option>', html)
    assertInHTML('<option value="23">23:00</option>', html)
    assertInHTML('<option value="America/New_York">America/New_York</option>', html)
    assertInHTML('<button type="submit">Save digest settings</button>', html)
    assert 'hx-get="/digest/preview/" hx-trigger="change" hx-target="#digest-preview"' in html


def test_before_any_schedule_digests_are_off_in_the_tenant_zone(tenant_a, member_a):
    html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    assertInHTML('<option value="off" selected>Off</option>', html)
    assertInHTML('<option value="Europe/Berlin" selected>Europe/Berlin</option>', html)
    assertInHTML('<option value="8" selected>08:00</option>', html)
    assert "No digests: they are off." in html
    assert "No digests yet." in html


def test_the_form_shows_the_saved_schedule_and_its_zone(tenant_a, member_a, frozen):
    with schema_context("acme"):
        user_schedule_update(
            user=member_a, frequency="weekly", weekday=2, hour=18, timezone_name="Asia/Tokyo"
        )

    html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    assertInHTML('<option value="weekly" selected>Weekly</option>', html)
    assertInHTML('<option value="2" selected>Wednesday</option>', html)
    assertInHTML('<option value="18" selected>18:00</option>', html)
    assertInHTML('<option value="Asia/Tokyo" selected>Asia/Tokyo</option>', html)
    assert _preview_items(html) == [
        "Wed 25 Nov 2026, 18:00 JST",
        "Wed 2 Dec 2026, 18:00 JST",
        "Wed 9 Dec 2026, 18:00 JST",
    ]


def test_the_browser_zone_is_offered_only_by_script(tenant_a, member_a):
    html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    # Hidden without JavaScript; the inline script fills in the zone and shows it.
    assert '<p id="browser-zone" hidden>' in html
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in html
    assert "Use my browser's time zone (" in html


def test_saving_a_weekly_digest_stores_it_and_tells_when_the_next_one_comes(
    tenant_a, member_a, frozen
):
    client = logged_in(tenant_a, member_a)

    response = client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN, follow=True)

    assertRedirects(response, PAGE)
    schedule = _schedule(member_a)
    assert (schedule.frequency, schedule.weekday, schedule.hour) == ("weekly", 0, 8)
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.next_due_at == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    html = response.content.decode()
    assert "Saved. Your next digest: Mon 23 Nov 2026, 08:00 CET." in html
    assert _preview_items(html) == NEXT_THREE_MONDAYS


def test_saving_a_weekly_digest_turns_the_tenant_dispatcher_on(tenant_a, member_a, frozen):
    assert not PeriodicTask.objects.filter(name="tenant:acme:digests", enabled=True).exists()

    logged_in(tenant_a, member_a).post(PAGE, WEEKLY_MONDAY_0800_BERLIN)

    assert PeriodicTask.objects.get(name="tenant:acme:digests").enabled


def test_turning_digests_off_saves_off_and_stops_the_dispatcher(tenant_a, member_a, frozen):
    client = logged_in(tenant_a, member_a)
    client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN)

    response = client.post(PAGE, {"frequency": "off", "timezone": "Europe/Berlin"}, follow=True)

    schedule = _schedule(member_a)
    assert (schedule.frequency, schedule.next_due_at) == ("off", None)
    assert "Saved. Digests are off." in response.content.decode()
    assert "No digests: they are off." in response.content.decode()
    assert not PeriodicTask.objects.get(name="tenant:acme:digests").enabled


def test_saving_in_another_zone_shows_the_next_digest_in_that_zone(tenant_a, member_a, frozen):
    data = {"frequency": "daily", "hour": "9", "timezone": "America/New_York"}

    response = logged_in(tenant_a, member_a).post(PAGE, data, follow=True)

    assert _schedule(member_a).next_due_at == datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    assert "Saved. Your next digest: Sat 21 Nov 2026, 09:00 EST." in response.content.decode()


def test_fields_the_frequency_does_not_use_are_ignored(tenant_a, member_a, frozen):
    data = {"frequency": "hourly", "hour": "25", "weekday": "9", "timezone": "UTC"}

    response = logged_in(tenant_a, member_a).post(PAGE, data)

    assertRedirects(response, PAGE, fetch_redirect_response=False)
    schedule = _schedule(member_a)
    assert (schedule.frequency, schedule.hour, schedule.weekday) == ("hourly", None, None)
    assert schedule.next_due_at == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"hour": "25"}, "hour", "Choose an hour from 00:00 to 23:00."),
        ({"hour": "abc"}, "hour", "Choose an hour from 00:00 to 23:00."),
        ({"hour": ""}, "hour", "Choose the hour of your daily or weekly digest."),
        ({"weekday": "9"}, "weekday", "Choose a day from Monday to Sunday."),
        ({"weekday": ""}, "weekday", "Choose the day of your weekly digest."),
        ({"frequency": "bogus"}, "frequency", "Choose off, hourly, daily or weekly."),
        ({"frequency": ""}, "frequency", "This field is required."),
        (
            {"timezone": "Mars/Base"},
            "timezone",
            "Mars/Base is not an IANA time zone name, such as Europe/Berlin or UTC.",
        ),
        ({"timezone": ""}, "timezone", "Choose a time zone."),
    ],
)
def test_bad_input_is_explained_beside_its_field_and_nothing_is_saved(
    tenant_a, member_a, frozen, changes, field, message
):
    with schema_context("acme"):
        before = user_schedule_update(user=member_a, frequency="daily", hour=7)

    response = logged_in(tenant_a, member_a).post(PAGE, WEEKLY_MONDAY_0800_BERLIN | changes)

    assert response.status_code == 200
    html = response.content.decode()
    assertInHTML(f'<ul class="errorlist" id="id_{field}_error"><li>{message}</li></ul>', html)
    assert re.search(rf'<select name="{field}"[^>]*aria-invalid="true"', html)
    assert "Fix the errors in the form to see your next digests." in html
    after = _schedule(member_a)
    assert (after.frequency, after.hour, after.weekday) == ("daily", 7, None)
    assert after.updated_at == before.updated_at


def test_bad_query_parameters_on_the_page_are_ignored(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).get(PAGE, {"page": "abc", "frequency": "bogus"})

    assert response.status_code == 200
    assertInHTML('<option value="off" selected>Off</option>', response.content.decode())


# --- The live preview ----------------------------------------------------------------


def test_the_preview_lists_the_next_three_digests_in_the_chosen_zone(tenant_a, member_a, frozen):
    response = logged_in(tenant_a, member_a).get(
        PREVIEW, WEEKLY_MONDAY_0800_BERLIN, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert _preview_items(html) == NEXT_THREE_MONDAYS
    assert "In Europe/Berlin:" in html
    assert "<html" not in html and "<nav" not in html  # only the fragment
    assert _schedule(member_a) is None  # a preview saves nothing


@pytest.mark.parametrize(
    ("now", "data", "expected"),
    [
        (  # New York leaves summer time on Sun 1 Nov 2026: 08:00 stays 08:00
            datetime(2026, 10, 30, 14, 0, tzinfo=UTC),
            {"frequency": "daily", "hour": "8", "timezone": "America/New_York"},
            [
                "Sat 31 Oct 2026, 08:00 EDT",
                "Sun 1 Nov 2026, 08:00 EST",
                "Mon 2 Nov 2026, 08:00 EST",
            ],
        ),
        (  # Berlin skips 02:00 on Sun 29 Mar 2026: that day's digest comes just after the gap
            datetime(2026, 3, 27, 12, 0, tzinfo=UTC),
            {"frequency": "daily", "hour": "2", "timezone": "Europe/Berlin"},
            [
                "Sat 28 Mar 2026, 02:00 CET",
                "Sun 29 Mar 2026, 03:00 CEST",
                "Mon 30 Mar 2026, 02:00 CEST",
            ],
        ),
        (  # New York's 01:00 happens twice on 1 Nov 2026; hourly digests come at both
            datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
            {"frequency": "hourly", "timezone": "America/New_York"},
            [
                "Sun 1 Nov 2026, 01:00 EDT",
                "Sun 1 Nov 2026, 01:00 EST",
                "Sun 1 Nov 2026, 02:00 EST",
            ],
        ),
    ],
)
def test_the_preview_keeps_local_time_across_daylight_saving_changes(
    tenant_a, member_a, time_machine, now, data, expected
):
    client = logged_in(tenant_a, member_a)
    time_machine.move_to(now, tick=False)

    response = client.get(PREVIEW, data)

    assert _preview_items(response.content.decode()) == expected


def test_the_preview_says_when_digests_are_off(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).get(
        PREVIEW, {"frequency": "off", "hour": "25", "timezone": "UTC"}
    )

    assert "No digests: they are off." in response.content.decode()


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (
            {"frequency": "weekly", "hour": "25", "weekday": "9", "timezone": "Mars/Base"},
            [
                "Day: Choose a day from Monday to Sunday.",
                "Hour: Choose an hour from 00:00 to 23:00.",
                "Time zone: Mars/Base is not an IANA time zone name, such as Europe/Berlin or UTC.",
            ],
        ),
        (
            {"frequency": "bogus", "timezone": "UTC"},
            ["Frequency: Choose off, hourly, daily or weekly."],
        ),
        ({}, ["Frequency: This field is required.", "Time zone: Choose a time zone."]),
    ],
)
def test_the_preview_explains_bad_values_instead_of_failing(tenant_a, member_a, data, errors):
    response = logged_in(tenant_a, member_a).get(PREVIEW, data)

    assert response.status_code == 200
    assert _preview_items(response.content.decode()) == errors


# --- Past digests --------------------------------------------------------------------


def test_past_digests_show_their_period_status_and_changes_in_the_user_zone(tenant_a, member_a):
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    with schema_context("acme"):
        user_schedule_update(user=member_a, frequency="daily", hour=8)
        _delivery(member_a, period=monday)
        _delivery(
            member_a,
            period=monday + timedelta(days=1),
            status="skipped",
            record_count=0,
            last_error="Nothing changed in this period.",
        )
        _delivery(
            member_a,
            period=monday + timedelta(days=2),
            status="failed",
            sent_at=None,
            attempts=3,
            last_error="The mail server could not be reached: timed out",
        )
        _delivery(member_a, period=monday + timedelta(days=3), status="queued", sent_at=None)

    html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    assert _history_rows(html) == [
        ["Wed 25 Nov 2026, 08:00 CET → Thu 26 Nov 2026, 08:00 CET", "Queued", "—", "—", ""],
        [
            "Tue 24 Nov 2026, 08:00 CET → Wed 25 Nov 2026, 08:00 CET",
            "Failed",
            "—",
            "—",
            "The mail server could not be reached: timed out (3 attempts)",
        ],
        [
            "Mon 23 Nov 2026, 08:00 CET → Tue 24 Nov 2026, 08:00 CET",
            "Skipped",
            "Tue 24 Nov 2026, 08:01 CET",
            "0",
            "Nothing changed in this period.",
        ],
        [
            "Sun 22 Nov 2026, 08:00 CET → Mon 23 Nov 2026, 08:00 CET",
            "Sent",
            "Mon 23 Nov 2026, 08:01 CET",
            "4",
            "",
        ],
    ]
    assertInHTML('<span class="badge failed">Failed</span>', html)
    assert "Times in Europe/Berlin." in html


def test_only_the_latest_twenty_digests_are_listed_newest_first(tenant_a, member_a):
    start = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)
    with schema_context("acme"):
        for day in range(25):
            _delivery(member_a, period=start + timedelta(days=day), record_count=day)

    rows = _history_rows(logged_in(tenant_a, member_a).get(PAGE).content.decode())

    assert [row[3] for row in rows] == [str(day) for day in range(24, 4, -1)]


def test_each_user_sees_only_their_own_schedule_and_digests(
    tenant_a, admin_a, member_a, tenant_b, outsider_b
):
    period = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    with schema_context("acme"):
        user_schedule_update(user=admin_a, frequency="hourly")
        user_schedule_update(user=member_a, frequency="weekly", weekday=4, hour=17)
        _delivery(admin_a, period=period, record_count=11)
        _delivery(member_a, period=period, record_count=22)
        _delivery(UserFactory(), period=period, record_count=33)
    with schema_context("globex"):
        _delivery(outsider_b, period=period, record_count=44)

    admin_html = logged_in(tenant_a, admin_a).get(PAGE).content.decode()
    member_html = logged_in(tenant_a, member_a).get(PAGE).content.decode()

    assertInHTML('<option value="hourly" selected>Hourly</option>', admin_html)
    assertInHTML('<option value="weekly" selected>Weekly</option>', member_html)
    assertInHTML('<option value="4" selected>Friday</option>', member_html)
    assert [row[3] for row in _history_rows(admin_html)] == ["11"]
    assert [row[3] for row in _history_rows(member_html)] == ["22"]


# --- Queries -------------------------------------------------------------------------


@pytest.mark.parametrize("deliveries", [1, 20])
def test_the_page_takes_a_fixed_number_of_queries(
    tenant_a, member_a, django_assert_num_queries, deliveries
):
    start = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)
    with schema_context("acme"):
        user_schedule_update(user=member_a, frequency="daily", hour=8)
        for day in range(deliveries):
            _delivery(member_a, period=start + timedelta(days=day))
    client = logged_in(tenant_a, member_a)

    # The host's tenant, the session, the user, the schedule and the digests: five reads,
    # and two SET search_path (public for the host, then the tenant's schema).
    with django_assert_num_queries(7):
        response = client.get(PAGE)

    assert len(_history_rows(response.content.decode())) == deliveries


@pytest.mark.parametrize("deliveries", [1, 20])
def test_the_preview_takes_a_fixed_number_of_queries(
    tenant_a, member_a, django_assert_num_queries, deliveries
):
    start = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)
    with schema_context("acme"):
        for day in range(deliveries):
            _delivery(member_a, period=start + timedelta(days=day))
    client = logged_in(tenant_a, member_a)

    # The host's tenant, the session and the user, and two SET search_path; the times are
    # computed, not read.
    with django_assert_num_queries(5):
        response = client.get(PREVIEW, WEEKLY_MONDAY_0800_BERLIN)

    assert len(_preview_items(response.content.decode())) == 3


# --- When nothing changed -------------------------------------------------------------


def test_the_user_chooses_what_happens_when_nothing_changed(tenant_a, member_a, frozen):
    client = logged_in(tenant_a, member_a)
    html = client.get(PAGE).content.decode()
    assert re.search(r'<input type="radio" name="when_empty" value="skip"[^>]*checked', html)

    client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN | {"when_empty": "send"})
    assert _schedule(member_a).send_when_empty is True

    client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN)  # a form without the field keeps the choice
    assert _schedule(member_a).send_when_empty is True

    client.post(PAGE, WEEKLY_MONDAY_0800_BERLIN | {"when_empty": "skip"})
    assert _schedule(member_a).send_when_empty is False


def test_an_unknown_empty_digest_choice_is_explained_and_nothing_is_saved(
    tenant_a, member_a, frozen
):
    response = logged_in(tenant_a, member_a).post(
        PAGE, WEEKLY_MONDAY_0800_BERLIN | {"when_empty": "sometimes"}
    )

    assert response.status_code == 200
    assert "Choose to skip the digest or to send a short note." in response.content.decode()
    assert _schedule(member_a) is None


# --- An address the mail server refused --------------------------------------------------

RETRY = "/digest/email-retry/"


def _mark_failing(user) -> None:
    with schema_context("acme"):
        type(user).objects.filter(pk=user.pk).update(
            email_failing_since=SATURDAY_1000_UTC, email_failure="550 5.1.1 No such mailbox"
        )


def test_a_refused_address_is_shown_and_its_owner_can_send_digests_to_it_again(
    tenant_a, admin_a, member_a
):
    from scheduling.audit.models import AuditEvent

    _mark_failing(member_a)
    client = logged_in(tenant_a, member_a)

    html = client.get(PAGE).content.decode()
    assert "Mail to member@acme.test was refused for good (550 5.1.1 No such mailbox)" in html
    users_page = logged_in(tenant_a, admin_a).get("/users/").content.decode()
    assert 'title="550 5.1.1 No such mailbox">email failing</span>' in users_page

    response = client.post(RETRY)

    assertRedirects(response, PAGE, fetch_redirect_response=False)
    with schema_context("acme"):
        member_a.refresh_from_db()
        event = AuditEvent.objects.get(action="user.changed")
    assert (member_a.email_failing_since, member_a.email_failure) == (None, "")
    assert (event.before, event.after) == ({"email_failing": True}, {"email_failing": False})
    assert "was refused for good" not in client.get(PAGE).content.decode()


def test_the_retry_button_only_ever_clears_the_signed_in_users_own_address(
    tenant_a, admin_a, member_a, tenant_b, outsider_b
):
    _mark_failing(admin_a)
    with schema_context("globex"):
        type(outsider_b).objects.filter(pk=outsider_b.pk).update(
            email_failing_since=SATURDAY_1000_UTC, email_failure="550"
        )

    logged_in(tenant_a, member_a).post(RETRY, {"user": str(admin_a.public_id)})
    foreign = logged_in(tenant_b, outsider_b).post(RETRY, HTTP_HOST=tenant_a.primary_host)
    anonymous = site_client(tenant_a).post(RETRY)
    get = logged_in(tenant_a, admin_a).get(RETRY)

    assertRedirects(foreign, f"/login/?next={RETRY}", fetch_redirect_response=False)
    assertRedirects(anonymous, f"/login/?next={RETRY}", fetch_redirect_response=False)
    assert get.status_code == 405
    with schema_context("acme"):
        admin_a.refresh_from_db()
    with schema_context("globex"):
        outsider_b.refresh_from_db()
    assert admin_a.email_failing_since is not None
    assert outsider_b.email_failing_since is not None
