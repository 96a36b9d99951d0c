"""The tenant site's dashboard, and its pause, resume and run-now controls."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from django.conf import settings
from django.test import Client
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling.audit.models import Action, AuditEvent
from scheduling.models import SyncRun
from scheduling.services import user_schedule_update
from tenants.models import Tenant
from tenants.services import tenant_pause
from tests.conftest import logged_in, site_client
from tests.factories import UserFactory
from tests.scheduling.sync_pages import (
    csrf_logged_in,
    runs_create,
    shown_messages,
    sync_task,
    text,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 13, 5, tzinfo=UTC)  # a Saturday; 14:05 CET in Berlin
QUEUE = "sync-pages-run-now-test"
ACTIONS = ("/sync/pause/", "/sync/resume/", "/sync/run-now/")


def _last_run_at(tenant, moment: datetime) -> None:
    PeriodicTask.objects.filter(name=f"tenant:{tenant.slug}:sync").update(last_run_at=moment)


def _status(slug: str) -> str:
    return Tenant.objects.get(schema_name=slug).status


def _events(tenant, action: str) -> list[AuditEvent]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action=action))


# --- Who may see it -----------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_login(tenant_a):
    response = site_client(tenant_a).get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_a_session_from_another_tenants_site_is_no_session_here(tenant_a, tenant_b, outsider_b):
    runs_create(tenant_a, 1, error="acme-only detail", status=SyncRun.Status.FAILED)
    client = logged_in(tenant_b, outsider_b)

    response = client.get("/", HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_the_dashboard_never_shows_another_tenants_runs(tenant_a, tenant_b, member_a):
    runs_create(tenant_b, 3, status=SyncRun.Status.FAILED, error="globex secret failure")

    page = text(logged_in(tenant_a, member_a).get("/"))

    assert "globex secret failure" not in page
    assert "No sync has run yet." in page
    assert "0 failed runs in the last 24 hours" in page


# --- What it shows --------------------------------------------------------------------


def test_a_member_sees_the_last_run_next_run_and_schedules_in_the_tenants_zone(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)
    _last_run_at(tenant_a, NOW - timedelta(minutes=5))
    runs_create(tenant_a, 1, newest=NOW - timedelta(hours=3))
    runs_create(
        tenant_a,
        1,
        newest=NOW - timedelta(minutes=5),
        status=SyncRun.Status.FAILED,
        error="The source answered 503.",
    )

    with time_machine.travel(NOW, tick=False):
        response = client.get("/")
    page = text(response)

    assert response.status_code == 200
    assert "Last sync Status Failed" in page
    assert "Started Sat 21 Nov 2026, 14:00 CET (Europe/Berlin)" in page
    assert "Duration 2.0 s" in page
    assert "Records 0 created, 1 updated, 7 unchanged" in page
    assert "Error The source answered 503." in page
    assert "Next sync Sat 21 Nov 2026, 14:15 CET (Europe/Berlin)" in page
    assert "1 failed run in the last 24 hours" in page
    assert 'href="/runs/?status=failed"' in response.content.decode()
    assert "Sync every 15 minutes Enabled Sat 21 Nov 2026, 14:15:00 CET" in page
    assert "0 users have a digest on." in page
    assert "Run now" not in page and "Pause sync" not in page  # controls are for admins


def test_failures_are_counted_for_the_last_24_hours_only(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)
    runs_create(tenant_a, 2, newest=NOW - timedelta(hours=23), status=SyncRun.Status.FAILED)
    runs_create(tenant_a, 4, newest=NOW - timedelta(hours=25), status=SyncRun.Status.FAILED)
    runs_create(tenant_a, 1, newest=NOW - timedelta(minutes=1))

    with time_machine.travel(NOW, tick=False):
        page = text(client.get("/"))

    assert "2 failed runs in the last 24 hours" in page
    assert "Last sync Status OK" in page


def test_a_paused_tenant_shows_paused_instead_of_a_next_run(tenant_a, member_a):
    tenant_pause(tenant=tenant_a)

    page = text(logged_in(tenant_a, member_a).get("/"))

    assert "Next sync Paused" in page
    assert "Sync every 15 minutes Disabled —" in page


def test_a_missing_sync_task_is_explained_not_an_error(tenant_a, member_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").delete()

    page = text(logged_in(tenant_a, member_a).get("/"))

    assert "Not scheduled: the sync task is missing." in page


def test_the_schedules_include_the_digest_dispatcher_and_who_gets_a_digest(tenant_a, member_a):
    with schema_context(tenant_a.schema_name):
        user_schedule_update(user=member_a, frequency="daily", hour=8)
        quiet = UserFactory(email="quiet@acme.test")
        user_schedule_update(user=quiet, frequency="off")

    page = text(logged_in(tenant_a, member_a).get("/"))

    interval = settings.DIGEST_DISPATCH_INTERVAL
    assert f"Digest dispatcher every {interval} seconds Enabled" in page
    assert "1 user has a digest on." in page


def test_an_admin_gets_run_now_and_pause_with_a_labelled_note(tenant_a, admin_a):
    response = logged_in(tenant_a, admin_a).get("/")
    html = response.content.decode()

    assert 'action="/sync/run-now/"' in html and ">Run now</button>" in html
    assert 'action="/sync/pause/"' in html and ">Pause sync</button>" in html
    assert '<label for="id_note">Note (optional)</label>' in html
    assert "Resume sync" not in html


def test_a_paused_tenants_admin_gets_resume(tenant_a, admin_a):
    tenant_pause(tenant=tenant_a)

    html = logged_in(tenant_a, admin_a).get("/").content.decode()

    assert ">Resume sync</button>" in html and "Pause sync" not in html


def test_htmx_gets_only_the_status_partial_which_refreshes_itself(tenant_a, admin_a):
    runs_create(tenant_a, 1)
    client = logged_in(tenant_a, admin_a)

    full = client.get("/")
    partial = client.get("/", HTTP_HX_REQUEST="true")
    html = partial.content.decode()

    assert html.lstrip().startswith('<div id="sync-status" hx-get="/" hx-trigger="every 10s"')
    assert "<html" not in html and "Run now" not in html
    assert "Last sync Status OK" in text(partial)
    assert '<div id="sync-status"' in full.content.decode() and "<html" in full.content.decode()
    assert "HX-Request" in partial["Vary"] and "HX-Request" in full["Vary"]


def test_a_history_restore_gets_the_whole_page(tenant_a, member_a):
    response = logged_in(tenant_a, member_a).get(
        "/", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )

    assert "<html" in response.content.decode()


@pytest.mark.parametrize("htmx", [False, True])
def test_the_dashboard_costs_the_same_queries_with_0_or_30_runs(
    tenant_a, admin_a, django_assert_num_queries, htmx
):
    client = logged_in(tenant_a, admin_a)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    # Domain, session, user; the sync and digest tasks, the last run, failures, digest users:
    # 7 queries, and two SET search_path (public for the host, then the tenant's schema).
    with django_assert_num_queries(9):
        empty = client.get("/", **headers)
    runs_create(tenant_a, 30, status=SyncRun.Status.FAILED)
    with django_assert_num_queries(9):
        full = client.get("/", **headers)

    assert "No sync has run yet." in text(empty)
    assert "30 failed runs in the last 24 hours" in text(full)


# --- Pause, resume, run now --------------------------------------------------------


def test_anonymous_posts_to_the_controls_are_sent_to_login(tenant_a):
    for path in ACTIONS:
        response = site_client(tenant_a).post(path)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={path}"
    assert _status("acme") == Tenant.Status.ACTIVE


def test_members_may_not_pause_resume_or_run_now(tenant_a, member_a):
    client = logged_in(tenant_a, member_a)

    codes = [client.post(path).status_code for path in ACTIONS]

    assert codes == [403, 403, 403]
    assert _status("acme") == Tenant.Status.ACTIVE
    assert sync_task(tenant_a).enabled is True


def test_the_controls_answer_get_with_405(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    assert [client.get(path).status_code for path in ACTIONS] == [405, 405, 405]
    assert _status("acme") == Tenant.Status.ACTIVE


def test_forged_posts_without_a_csrf_token_are_refused(tenant_a, admin_a):
    client = csrf_logged_in(tenant_a, admin_a)

    codes = [client.post(path).status_code for path in ACTIONS]

    assert codes == [403, 403, 403]
    assert _status("acme") == Tenant.Status.ACTIVE


def test_an_admin_of_another_tenant_cannot_pause_this_one(tenant_a, tenant_b, outsider_b):
    client = logged_in(tenant_b, outsider_b)

    response = client.post("/sync/pause/", HTTP_HOST=tenant_a.primary_host)

    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert _status("acme") == Tenant.Status.ACTIVE


def test_pause_with_a_note_disables_the_sync_and_records_the_note(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    response = client.post("/sync/pause/", {"note": "Source migration tonight"}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert shown_messages(response) == ["Sync paused. No sync runs until you resume it."]
    assert _status("acme") == Tenant.Status.PAUSED
    assert sync_task(tenant_a).enabled is False
    [event] = _events(tenant_a, Action.TENANT_PAUSED)
    assert (event.note, event.actor_label) == ("Source migration tonight", "admin@acme.test")
    assert "Next sync Paused" in text(response)


def test_resume_enables_the_sync_again(tenant_a, admin_a):
    tenant_pause(tenant=tenant_a)
    client = logged_in(tenant_a, admin_a)

    response = client.post("/sync/resume/", {"note": ""}, follow=True)

    assert shown_messages(response) == ["Sync resumed."]
    assert _status("acme") == Tenant.Status.ACTIVE
    assert sync_task(tenant_a).enabled is True
    [event] = _events(tenant_a, Action.TENANT_RESUMED)
    assert event.note == ""


def test_pausing_twice_says_so_and_records_nothing_more(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    client.post("/sync/pause/", follow=True)

    response = client.post("/sync/pause/", follow=True)

    assert shown_messages(response) == ["Sync was already paused."]
    assert len(_events(tenant_a, Action.TENANT_PAUSED)) == 1


def test_a_note_over_500_characters_changes_nothing(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    response = client.post("/sync/pause/", {"note": "x" * 501}, follow=True)

    [message] = shown_messages(response)
    assert message.startswith("Nothing changed: Ensure this value has at most 500 characters")
    assert _status("acme") == Tenant.Status.ACTIVE
    assert _events(tenant_a, Action.TENANT_PAUSED) == []


def test_a_tenant_named_in_post_data_is_ignored(tenant_a, tenant_b, admin_a):
    client = logged_in(tenant_a, admin_a)

    client.post("/sync/pause/", {"tenant": str(tenant_b.public_id), "schema_name": "globex"})

    assert (_status("acme"), _status("globex")) == (Tenant.Status.PAUSED, Tenant.Status.ACTIVE)


def _broker_messages(client: Client) -> tuple[list[dict], object]:
    broker = redis.Redis.from_url(settings.REDIS.client)
    try:
        response = client.post("/sync/run-now/", follow=True)
        raw = broker.lrange(QUEUE, 0, -1)
    finally:
        broker.delete(QUEUE)
    return [json.loads(item) for item in raw], response


def test_run_now_queues_the_sync_in_the_tenants_schema(tenant_a, tenant_b, admin_a):
    PeriodicTask.objects.filter(name__in=["tenant:acme:sync", "tenant:globex:sync"]).update(
        queue=QUEUE
    )

    [message], response = _broker_messages(logged_in(tenant_a, admin_a))

    assert message["headers"]["_schema_name"] == "acme"
    assert message["headers"]["task"] == sync_task(tenant_a).task
    assert response.redirect_chain == [("/", 302)]
    assert shown_messages(response) == [
        "Sync queued. It will appear in the run history in a moment."
    ]
    [event] = _events(tenant_a, Action.PERIODIC_TASK_RUN)
    assert event.actor_label == "admin@acme.test"


def test_run_now_of_a_paused_tenant_says_why_and_sends_nothing(tenant_a, admin_a):
    tenant_pause(tenant=tenant_a)
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(queue=QUEUE)

    messages, response = _broker_messages(logged_in(tenant_a, admin_a))

    assert messages == []
    assert response.status_code == 200
    assert shown_messages(response) == [
        "Not queued: Acme Corp is paused; resume it before running a sync."
    ]


def test_run_now_without_a_sync_task_says_how_to_restore_it(tenant_a, admin_a):
    PeriodicTask.objects.filter(name="tenant:acme:sync").delete()

    response = logged_in(tenant_a, admin_a).post("/sync/run-now/", follow=True)

    assert shown_messages(response) == [
        "Not queued: tenant:acme:sync does not exist; reconcile schedules to restore it."
    ]
