"""The tenant admins' side of issue 7's policies: the schedule history (each slot of the
tenant's own schedules and its outcome) and pausing the sync schedule with a note."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_tenants.utils import schema_context

from scheduling.audit.models import Action, AuditEvent
from scheduling.jobs import CLEANUP
from scheduling.platform.models import Occurrence, ScheduleState
from scheduling.platform.policies import schedule_pause, schedule_pause_get
from scheduling.views import OCCURRENCES_PER_PAGE, SYNC_TASK_MISSING
from tenants.services import tenant_pause
from tests.conftest import logged_in, site_client
from tests.scheduling.sync_pages import csrf_logged_in, shown_messages, text

pytestmark = pytest.mark.django_db

HISTORY = "/sync/history/"
SETTINGS = "/sync/settings/"
PAUSE = "/sync/schedule/pause/"
RESUME = "/sync/schedule/resume/"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _task(slug: str, kind: str = "sync") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:{kind}")


def _occurrences(task: PeriodicTask, count: int, *, status: str = "finished", **fields) -> None:
    """`count` occurrences of `task`, a quarter of an hour apart, the newest at T0."""
    schema = task.name.split(":")[1]
    Occurrence.objects.bulk_create(
        Occurrence(
            periodic_task_id=task.pk,
            name=task.name,
            schema_name=schema,
            slot_at=T0 - timedelta(minutes=15 * index),
            due_at=T0 - timedelta(minutes=15 * index) + timedelta(seconds=9),
            status=status,
            recorded_at=T0 - timedelta(minutes=15 * index) + timedelta(seconds=9),
            **fields,
        )
        for index in range(count)
    )


def _rows(response) -> list[str]:
    """Each row of the history as its text."""
    table = re.search(
        r'<table id="occurrences">.*?<tbody>(.*?)</tbody>', response.content.decode(), re.S
    )
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


def _shown_slots(response) -> list[datetime]:
    html = response.content.decode()
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)
    return [
        datetime.fromisoformat(moment)
        for moment in re.findall(r'<td class="nowrap">\s*<time datetime="([^"]+)"', body)
    ]


# --- The schedule history ------------------------------------------------------------------


def test_the_admin_sees_each_outcome_of_the_tenants_schedules_newest_first(tenant_a, admin_a):
    sync = _task("acme")
    _occurrences(
        sync,
        1,
        status="finished",
        started_at=T0 + timedelta(seconds=10),
        finished_at=T0 + timedelta(seconds=12),
    )
    Occurrence.objects.create(
        periodic_task_id=sync.pk,
        name=sync.name,
        schema_name="acme",
        slot_at=T0 - timedelta(days=1),
        due_at=T0 - timedelta(days=1),
        slots=93,
        last_slot_at=T0 - timedelta(hours=1),
        status="missed",
        recorded_at=T0,
    )
    Occurrence.objects.create(
        periodic_task_id=sync.pk,
        name=sync.name,
        schema_name="acme",
        slot_at=T0 + timedelta(minutes=15),
        due_at=T0 + timedelta(minutes=15),
        status="failed",
        recorded_at=T0 + timedelta(minutes=15),
        error="Source answered 503\nTraceback ...",
    )

    response = logged_in(tenant_a, admin_a).get(HISTORY)

    assert response.status_code == 200
    rows = _rows(response)
    assert [row.split(" ")[0] for row in rows] == ["Sync", "Sync", "Sync"]
    assert "Failed" in rows[0] and "Source answered 503" in rows[0]
    assert "Ran" in rows[1] and "2.0 s" in rows[1] and "Mon 4 May 2026, 12:00:00 CEST" in rows[1]
    assert (
        "Missed (downtime)" in rows[2] and "93 times, to Mon 4 May 2026, 11:00:00 CEST" in rows[2]
    )
    assert 'aria-current="page">Schedule history</a>' in response.content.decode()


def test_the_history_shows_every_outcome_label(tenant_a, admin_a):
    sync = _task("acme")
    for minutes, status in enumerate(Occurrence.Status.values):
        Occurrence.objects.create(
            periodic_task_id=sync.pk,
            name=sync.name,
            schema_name="acme",
            slot_at=T0 + timedelta(minutes=minutes),
            due_at=T0,
            status=status,
            recorded_at=T0,
        )

    page = text(logged_in(tenant_a, admin_a).get(HISTORY))

    for label in Occurrence.Status.labels:
        assert label in page


def test_a_sent_message_that_expired_unstarted_is_shown_as_expired(tenant_a, admin_a):
    sync = _task("acme")
    now = datetime.now(UTC)
    for minutes, live_until in ((1, now - timedelta(seconds=1)), (2, now + timedelta(minutes=5))):
        Occurrence.objects.create(
            periodic_task_id=sync.pk,
            name=sync.name,
            schema_name="acme",
            slot_at=T0 + timedelta(minutes=minutes),
            due_at=T0,
            status="sent",
            recorded_at=T0 + timedelta(minutes=minutes),
            live_until=live_until,
        )

    client = logged_in(tenant_a, admin_a)
    rows = _rows(client.get(HISTORY))

    # Newest recorded first: the one that may still run, then the expired one.
    assert "Sent" in rows[0] and "Expired" not in rows[0]
    assert "Expired (never started)" in rows[1] and "Sent" not in rows[1]
    # Each has its own outcome in the filter too.
    expired = _rows(client.get(HISTORY + "?status=expired"))
    sent = _rows(client.get(HISTORY + "?status=sent"))
    assert len(expired) == 1 and "Expired (never started)" in expired[0]
    assert len(sent) == 1 and "Sent" in sent[0]


def test_another_tenants_occurrences_are_never_shown_even_when_asked_for(
    tenant_a, admin_a, tenant_b, outsider_b
):
    _occurrences(_task("acme"), 2)
    globex = _task("globex")
    _occurrences(globex, 3, status="failed", error="globex secret error")
    # An occurrence recorded under acme's task id for globex's schema is not acme's either.
    Occurrence.objects.create(
        periodic_task_id=_task("acme").pk,
        name="tenant:acme:sync",
        schema_name="globex",
        slot_at=T0 + timedelta(hours=1),
        due_at=T0,
        status="failed",
        recorded_at=T0,
        error="globex secret error",
    )
    platform = PeriodicTask.objects.create(
        name="platform:cleanup",
        task=CLEANUP.task_name,
        interval=IntervalSchedule.objects.create(every=3600, period="seconds"),
    )
    Occurrence.objects.create(
        periodic_task_id=platform.pk,
        name=platform.name,
        schema_name="",
        slot_at=T0,
        due_at=T0,
        status="failed",
        recorded_at=T0,
        error="platform secret error",
    )
    client = logged_in(tenant_a, admin_a)

    for query in (
        "",
        f"?task={globex.pk}",
        f"?periodic_task_id={globex.pk}",
        "?schema=globex&schema_name=globex&tenant=globex",
        f"?tenant={tenant_b.public_id}",
        "?status=failed",
        "?q=globex",
    ):
        response = client.get(HISTORY + query)
        assert response.status_code == 200
        assert "secret error" not in response.content.decode()
        assert all(row.startswith("Sync ") for row in _rows(response))
        assert all(slot <= T0 for slot in _shown_slots(response))
    assert len(_rows(client.get(HISTORY))) == 2

    theirs = logged_in(tenant_b, outsider_b).get(HISTORY)
    assert len(_rows(theirs)) == 3 and "acme" not in theirs.content.decode().lower()


def test_members_get_the_same_403_as_on_the_other_admin_pages(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    for url in (HISTORY, SETTINGS, "/audit/"):
        assert client.get(url).status_code == 403
    assert "Schedule history" not in client.get("/").content.decode()


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    response = site_client(tenant_a).get(HISTORY)

    assert response.status_code == 302 and response["Location"] == f"/login/?next={HISTORY}"


def test_a_session_from_another_tenants_site_is_no_session_here(tenant_a, tenant_b, outsider_b):
    _occurrences(_task("acme"), 1)
    client = logged_in(tenant_b, outsider_b)

    response = client.get(HISTORY, HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_history_is_paged_newest_first_without_counting_it(tenant_a, admin_a):
    _occurrences(_task("acme"), OCCURRENCES_PER_PAGE + 3)
    client = logged_in(tenant_a, admin_a)

    first = client.get(HISTORY)
    second = client.get(HISTORY + "?page=2")

    assert len(_rows(first)) == OCCURRENCES_PER_PAGE and len(_rows(second)) == 3
    slots = _shown_slots(first) + _shown_slots(second)
    assert slots == sorted(slots, reverse=True) and slots[0] == T0 and len(set(slots)) == len(slots)
    assert 'rel="next">Older</a>' in first.content.decode()
    assert 'rel="prev">Newer</a>' in second.content.decode()
    assert 'rel="next"' not in second.content.decode()


def test_the_digest_dispatcher_and_sync_are_merged_in_slot_order(tenant_a, admin_a):
    from scheduling.services import user_schedule_update

    with schema_context("acme"):
        user_schedule_update(user=admin_a, frequency="daily", hour=9)
    sync, digests = _task("acme"), _task("acme", "digests")
    _occurrences(sync, 3)
    Occurrence.objects.create(
        periodic_task_id=digests.pk,
        name=digests.name,
        schema_name="acme",
        slot_at=T0 - timedelta(minutes=20),
        due_at=T0,
        status="finished",
        recorded_at=T0,
    )

    rows = _rows(logged_in(tenant_a, admin_a).get(HISTORY))

    assert [row.split(" ")[0] for row in rows] == ["Sync", "Sync", "Digest", "Sync"]


def test_the_outcome_filter_shows_one_outcome(tenant_a, admin_a):
    sync = _task("acme")
    _occurrences(sync, 4)
    Occurrence.objects.create(
        periodic_task_id=sync.pk,
        name=sync.name,
        schema_name="acme",
        slot_at=T0 - timedelta(days=3),
        due_at=T0,
        status="skipped",
        recorded_at=T0,
    )

    response = logged_in(tenant_a, admin_a).get(HISTORY + "?status=skipped")

    assert [row for row in _rows(response) if "Skipped" in row] == _rows(response)
    assert len(_rows(response)) == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?page=abc", "There is no such page"),
        ("?page=0", "There is no such page"),
        ("?page=-1", "There is no such page"),
        ("?page=1001", "There is no such page"),
        ("?page=99999999999999999999999999", "There is no such page"),
        ("?status=exploded", "There is no outcome “exploded”"),
    ],
)
def test_bad_parameters_are_explained_and_the_default_shown(tenant_a, admin_a, query, message):
    _occurrences(_task("acme"), 3)

    response = logged_in(tenant_a, admin_a).get(HISTORY + query)

    assert response.status_code == 200
    assert message in text(response)
    assert len(_rows(response)) == 3


def test_a_page_past_the_end_says_so_and_links_back(tenant_a, admin_a):
    _occurrences(_task("acme"), 3)

    response = logged_in(tenant_a, admin_a).get(HISTORY + "?page=7")

    assert response.status_code == 200
    assert "Nothing on this page." in text(response)
    assert 'rel="prev">Newer</a>' in response.content.decode()


def test_the_page_costs_the_same_few_queries_however_long_the_history(
    tenant_a, admin_a, django_assert_num_queries
):
    client = logged_in(tenant_a, admin_a)
    # Domain, session, user, the tenant's task links, the page; two SET search_path.
    with django_assert_num_queries(7):
        client.get(HISTORY)
    _occurrences(_task("acme"), 120)
    with django_assert_num_queries(7):
        client.get(HISTORY + "?page=2")


def test_htmx_gets_only_the_table(tenant_a, admin_a):
    _occurrences(_task("acme"), 2)

    response = logged_in(tenant_a, admin_a).get(HISTORY, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="history-region"')
    assert "<h1>" not in html and len(_rows(response)) == 2


# --- Pausing the sync schedule on the settings page -------------------------------------------


def test_the_admin_pauses_the_sync_schedule_with_a_note_and_sees_it(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    response = client.post(PAUSE, {"note": "  Our CRM is being migrated this week. "}, follow=True)

    assert response.redirect_chain == [(SETTINGS, 302)]
    assert shown_messages(response) == [
        "Sync schedule paused. No scheduled sync runs until you resume it."
    ]
    task = _task("acme")
    assert not task.enabled
    assert (
        schedule_pause_get(periodic_task_id=task.pk).note == "Our CRM is being migrated this week."
    )
    shown = text(response)
    assert "Paused since" in shown and "Our CRM is being migrated this week." in shown
    assert "Next run: Paused schedule" in shown
    with schema_context("acme"):
        [event] = AuditEvent.objects.filter(action=Action.PERIODIC_TASK_CHANGED)
    assert (event.note, event.actor_label, event.target) == (
        "Our CRM is being migrated this week.",
        admin_a.email,
        "tenant:acme:sync",
    )


def test_the_admin_resumes_it(tenant_a, admin_a):
    schedule_pause(_task("acme"), note="migration")
    client = logged_in(tenant_a, admin_a)

    response = client.post(RESUME, follow=True)

    assert _task("acme").enabled
    assert schedule_pause_get(periodic_task_id=_task("acme").pk) is None
    assert any(m.startswith("Sync schedule resumed.") for m in shown_messages(response))
    assert "Pause the schedule" in text(response)


def test_resuming_a_schedule_that_is_not_paused_says_so(tenant_a, admin_a):
    response = logged_in(tenant_a, admin_a).post(RESUME, follow=True)

    assert shown_messages(response) == ["The sync schedule was not paused."]


@pytest.mark.parametrize(("url", "verb"), [(PAUSE, "paused"), (RESUME, "resumed")])
def test_a_sync_task_deleted_while_the_request_runs_is_explained(
    tenant_a, admin_a, monkeypatch, url, verb
):
    stale = _task("acme")
    stale.delete()  # by an operator, after the view found the task and before it acts
    monkeypatch.setattr("scheduling.views.tenant_sync_task", lambda tenant: stale)

    response = logged_in(tenant_a, admin_a).post(url, {"note": "outage"}, follow=True)

    assert response.redirect_chain == [(SETTINGS, 302)]
    assert shown_messages(response) == [f"Not {verb}: {SYNC_TASK_MISSING}"]
    assert not ScheduleState.objects.filter(pk=stale.pk).exists()


def test_pausing_twice_says_it_was_paused_already(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    client.post(PAUSE, {"note": "first"}, follow=True)

    response = client.post(PAUSE, {"note": "second"}, follow=True)

    assert shown_messages(response) == ["The sync schedule was paused already."]
    assert schedule_pause_get(periodic_task_id=_task("acme").pk).note == "first"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("", "This field is required."),
        ("    ", "This field is required."),
        ("x" * 501, "Ensure this value has at most 500 characters (it has 501)."),
    ],
)
def test_a_pause_without_a_usable_note_is_explained_and_changes_nothing(
    tenant_a, admin_a, note, message
):
    client = logged_in(tenant_a, admin_a)

    response = client.post(PAUSE, {"note": note})

    assert response.status_code == 200
    assert message in text(response)
    assert _task("acme").enabled
    assert not ScheduleState.objects.filter(paused_at__isnull=False).exists()
    with schema_context("acme"):
        assert not AuditEvent.objects.filter(action=Action.PERIODIC_TASK_CHANGED).exists()


def test_members_cannot_pause_or_resume(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    assert client.post(PAUSE, {"note": "by a member"}).status_code == 403
    schedule_pause(_task("acme"), note="by the admin")
    assert client.post(RESUME).status_code == 403

    assert schedule_pause_get(periodic_task_id=_task("acme").pk).note == "by the admin"


def test_pausing_on_one_tenants_site_leaves_every_other_tenant_alone(
    tenant_a, admin_a, tenant_b, outsider_b
):
    schedule_pause(_task("acme"), note="paused by acme")
    client = logged_in(tenant_b, outsider_b)

    client.post(
        PAUSE,
        {
            "note": "globex pause",
            "tenant": str(tenant_a.public_id),
            "task": _task("acme").pk,
            "schema_name": "acme",
        },
    )
    client.post(RESUME, {"tenant": str(tenant_a.public_id), "task": _task("acme").pk})

    assert schedule_pause_get(periodic_task_id=_task("acme").pk).note == "paused by acme"
    assert _task("globex").enabled  # paused and resumed again: its own task only
    theirs = logged_in(tenant_a, admin_a).get(SETTINGS)
    assert "paused by acme" in text(theirs) and "globex pause" not in text(theirs)


def test_pause_and_resume_only_take_posts_with_a_csrf_token(tenant_a, admin_a):
    client = csrf_logged_in(tenant_a, admin_a)

    assert client.get(PAUSE).status_code == 405
    assert client.get(RESUME).status_code == 405
    assert client.post(PAUSE, {"note": "forged"}).status_code == 403
    assert _task("acme").enabled


def test_a_paused_tenant_keeps_its_schedule_pause_and_shows_both(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    client.post(PAUSE, {"note": "migration"})
    tenant_pause(tenant=tenant_a)

    shown = text(client.get(SETTINGS))

    assert "Next run: Paused" in shown and "migration" in shown


def test_a_missing_sync_task_is_explained(tenant_a, admin_a):
    _task("acme").delete()
    client = logged_in(tenant_a, admin_a)

    response = client.post(PAUSE, {"note": "anything"}, follow=True)

    assert shown_messages(response) == [
        "Not paused: The sync task is missing; an operator restores it by reconciling schedules."
    ]
