"""The operators' side of issue 7's policies: the policy inline on a periodic task's change
page, the pause and resume actions, and the read-only occurrence history."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduling.jobs import CLEANUP
from scheduling.platform import admin as platform_admin
from scheduling.platform.models import Occurrence, ScheduleState
from scheduling.platform.policies import schedule_pause, schedule_pause_get
from tests.audit.conftest import events
from tests.conftest import logged_in, site_client
from tests.helpers import admin_form_data

pytestmark = pytest.mark.django_db

TASKS_URL = "/admin/django_celery_beat/periodictask/"
URL = "/admin/scheduling_platform/occurrence/"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _sync_task(slug: str = "acme") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:sync")


def _occurrence(task: PeriodicTask, slot: datetime, status: str = "finished", **fields):
    schema = task.name.split(":")[1] if task.name.startswith("tenant:") else ""
    values = {
        "periodic_task_id": task.pk,
        "name": task.name,
        "schema_name": schema,
        "slot_at": slot,
        "due_at": slot + timedelta(seconds=7),
        "status": status,
        "recorded_at": slot + timedelta(seconds=7),
    }
    return Occurrence.objects.create(**(values | fields))


def _listed(client, query: str = "") -> list[tuple[str, datetime]]:
    response = client.get(URL + query)
    assert response.status_code == 200, response
    return [(o.name, o.slot_at) for o in response.context["cl"].result_list]


# --- The occurrence history ----------------------------------------------------------------


def test_the_history_lists_each_occurrence_newest_recorded_first_with_its_outcome(
    tenant_a, tenant_b, operator_client
):
    acme, globex = _sync_task("acme"), _sync_task("globex")
    _occurrence(acme, T0, "finished", started_at=T0 + timedelta(seconds=8))
    _occurrence(globex, T0 + timedelta(minutes=1), "failed", error="Source said 503\nTraceback")
    _occurrence(
        acme, T0 - timedelta(days=2), "missed", slots=40, recorded_at=T0 + timedelta(hours=1)
    )

    response = operator_client.get(URL)

    assert [(o.name, o.status) for o in response.context["cl"].result_list] == [
        ("tenant:acme:sync", "missed"),
        ("tenant:globex:sync", "failed"),
        ("tenant:acme:sync", "finished"),
    ]
    html = response.content.decode()
    for shown in ("Missed (downtime)", "Failed", "Ran", "Source said 503", ">40<", "globex"):
        assert shown in html
    headers = re.findall(r'<th scope="col"\s+class="column-(\w+)', html)
    assert headers == [
        "name",
        "tenant",
        "slot_at",
        "due_at",
        "outcome",
        "slots",
        "started_at",
        "finished_at",
        "error_short",
        "recorded_at",
    ]


def test_a_sent_message_that_expired_unstarted_is_listed_as_expired(tenant_a, operator_client):
    acme = _sync_task("acme")
    now = datetime.now(UTC)
    _occurrence(acme, T0, "sent", live_until=now - timedelta(seconds=1))
    _occurrence(acme, T0 + timedelta(minutes=1), "sent", live_until=now + timedelta(minutes=5))

    html = operator_client.get(URL).content.decode()

    outcomes = re.findall(r'<td class="field-outcome">([^<]*)</td>', html)
    assert outcomes == ["Sent", "Expired (never started)"]
    assert _listed(operator_client, "?status=expired") == [("tenant:acme:sync", T0)]
    assert _listed(operator_client, "?status=sent") == [
        ("tenant:acme:sync", T0 + timedelta(minutes=1))
    ]


def test_it_filters_by_outcome_and_by_kind_of_job(tenant_a, operator_client):
    sync = _sync_task()
    cleanup = PeriodicTask.objects.create(
        name="platform:cleanup",
        task=CLEANUP.task_name,
        interval=IntervalSchedule.objects.create(every=3600, period="seconds"),
    )
    _occurrence(sync, T0, "failed")
    _occurrence(sync, T0 + timedelta(minutes=15), "skipped")
    _occurrence(cleanup, T0, "finished")

    assert _listed(operator_client, "?status=failed") == [("tenant:acme:sync", T0)]
    assert _listed(operator_client, "?kind=cleanup") == [("platform:cleanup", T0)]
    assert len(_listed(operator_client, "?kind=sync")) == 2
    assert _listed(operator_client, "?kind=sync&status=finished") == []


def test_a_search_finds_tasks_by_name_or_its_beginning_and_tenants_by_schema(
    tenant_a, tenant_b, operator_client
):
    _occurrence(_sync_task("acme"), T0)
    _occurrence(_sync_task("globex"), T0)
    _occurrence(_sync_task("globex"), T0 + timedelta(hours=1))

    assert _listed(operator_client, "?q=tenant:acme:sync") == [("tenant:acme:sync", T0)]
    assert len(_listed(operator_client, "?q=tenant:glo")) == 2
    assert len(_listed(operator_client, "?q=globex")) == 2
    assert _listed(operator_client, "?q=acme") == [("tenant:acme:sync", T0)]
    assert _listed(operator_client, "?q=nobody") == []


def test_a_periodic_tasks_change_page_links_to_its_own_occurrences(
    tenant_a, tenant_b, operator_client
):
    task = _sync_task("acme")
    _occurrence(task, T0)
    _occurrence(task, T0 + timedelta(minutes=15))
    _occurrence(_sync_task("globex"), T0)

    html = operator_client.get(_change_url(task)).content.decode()
    links = set(re.findall(rf'href="({URL}\?task=\d+)"', html))

    assert links == {f"{URL}?task={task.pk}"}
    listed = _listed(operator_client, f"?task={task.pk}")
    assert listed == [(task.name, T0 + timedelta(minutes=15)), (task.name, T0)]


def test_the_date_drill_down_offers_the_steps_between_the_first_and_last_rows(
    tenant_a, operator_client
):
    task = _sync_task()
    _occurrence(task, datetime(2025, 12, 30, 8, tzinfo=UTC))
    _occurrence(task, datetime(2026, 2, 3, 8, tzinfo=UTC))

    def steps(query: str) -> list[str]:
        html = operator_client.get(URL + query).content.decode()
        nav = re.search(r'<nav class="toplinks">(.*?)</nav>', html, re.S).group(1)
        texts = (re.sub(r"\s+", " ", text).strip() for text in re.findall(r">([^<>]+)<", nav))
        return [text for text in texts if text]

    assert steps("") == ["2025", "2026"]
    assert steps("?recorded_at__year=2026") == ["&lsaquo; All dates", "2026-01", "2026-02"]
    assert steps("?recorded_at__year=2026&recorded_at__month=2") == ["&lsaquo; 2026"] + [
        f"2026-02-{day:02d}" for day in (1, 2, 3)
    ]
    assert _listed(operator_client, "?recorded_at__year=2026&recorded_at__month=2") == [
        (task.name, datetime(2026, 2, 3, 8, tzinfo=UTC))
    ]
    assert _listed(operator_client, "?recorded_at__year=2026&recorded_at__month=1") == []


def test_the_list_never_counts_the_whole_history(tenant_a, operator_client, monkeypatch):
    monkeypatch.setattr(platform_admin.OccurrenceAdmin, "list_per_page", 2)
    task = _sync_task()
    for index in range(7):
        _occurrence(task, T0 + timedelta(minutes=index))

    with CaptureQueriesContext(connection) as queries:
        response = operator_client.get(URL)
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]  # before the next request
    second = operator_client.get(URL + "?p=2").context["cl"]

    assert str(response.context["cl"].result_count) == "4+"  # up to one page past this one
    assert str(second.result_count) == "6+"
    assert "4+ occurrences" in response.content.decode()
    assert counts and all("LIMIT" in sql for sql in counts)
    last = operator_client.get(URL + "?p=4").context["cl"]
    assert last.result_count == 7 and len(last.result_list) == 1


def test_nothing_in_the_history_can_be_added_changed_or_deleted(tenant_a, operator_client):
    occurrence = _occurrence(_sync_task(), T0)
    page = f"{URL}{occurrence.pk}/change/"

    assert operator_client.get(f"{URL}add/").status_code == 403
    assert operator_client.get(page).status_code == 200  # a read-only view
    assert operator_client.post(page, {"status": "failed"}).status_code == 403
    assert operator_client.post(f"{URL}{occurrence.pk}/delete/", {"post": "yes"}).status_code == 403
    assert 'name="action"' not in operator_client.get(URL).content.decode()
    assert Occurrence.objects.get(pk=occurrence.pk).status == "finished"


@pytest.mark.parametrize(
    ("query", "status", "rows"),
    [
        ("?status=bogus", 200, 0),
        ("?kind=bogus", 200, 0),
        ("?task=abc", 200, 0),
        ("?task=99999999999999999999999", 200, 0),
        ("?p=abc", 200, 1),
        ("?p=-3", 200, 1),  # one page: Django shows it whatever the number
        ("?p=5000", 200, 1),
        ("?recorded_at__year=abc", 302, None),
        ("?recorded_at__year=2026&recorded_at__month=13", 302, None),
        ("?recorded_at__year=99999999", 302, None),
        ("?recorded_at__month=3", 400, None),  # no year: a scan of every row
        ("?name__regex=.*", 400, None),
        ("?error__contains=x", 400, None),
    ],
)
def test_bad_parameters_get_a_clear_answer_never_a_server_error(
    tenant_a, operator_client, query, status, rows
):
    _occurrence(_sync_task(), T0)

    response = operator_client.get(URL + query)

    assert response.status_code == status
    if status == 302:
        assert response["Location"].endswith("?e=1")  # the admin's "bad filter" page
    if rows is not None:
        assert len(response.context["cl"].result_list) == rows


def test_tenant_users_and_strangers_get_nothing(tenant_a, admin_a, tenant_b, outsider_b):
    _occurrence(_sync_task(), T0)

    for tenant, user in ((tenant_a, admin_a), (tenant_b, outsider_b)):
        assert logged_in(tenant, user).get(URL).status_code == 404
    anonymous = site_client()
    response = anonymous.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- Policies on the periodic task's change page -------------------------------------------


def _change_url(task: PeriodicTask) -> str:
    return f"{TASKS_URL}{task.pk}/change/"


def _scheduled(task: PeriodicTask) -> None:
    ScheduleState.objects.filter(pk=task.pk).delete()
    ScheduleState.objects.create(
        periodic_task_id=task.pk,
        first_seen_at=T0 - timedelta(days=1),
        active=True,
        timing="f" * 32,
        next_slot_at=T0 + timedelta(minutes=15),
        due_at=T0 + timedelta(minutes=15, seconds=7),
        last_slot_at=T0,
    )


def test_the_change_page_edits_the_policies_and_only_shows_the_due_fields(
    tenant_a, operator_client
):
    task = _sync_task()
    _scheduled(task)

    html = operator_client.get(_change_url(task)).content.decode()

    for name in ("overlap", "catchup_window", "run_all", "jitter"):
        assert f'name="dispatch_state-0-{name}"' in html
    for name in ("first_seen_at", "active", "next_slot_at", "due_at", "last_slot_at"):
        assert f'name="dispatch_state-0-{name}"' not in html
        assert f"field-{name}" in html  # shown read-only


def test_a_policy_saved_in_the_change_form_keeps_what_the_scheduler_wrote_since_the_page_loaded(
    tenant_a, operator, operator_client
):
    task = _sync_task()
    _scheduled(task)
    data = admin_form_data(
        operator_client,
        _change_url(task),
        overlap="buffer_one",  # the inline's fields, by name (admin_form_data)
        jitter="45",
    )
    moved = (
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=30, seconds=7),
        T0 + timedelta(minutes=15),
    )
    ScheduleState.objects.filter(pk=task.pk).update(
        next_slot_at=moved[0], due_at=moved[1], last_slot_at=moved[2]
    )

    response = operator_client.post(_change_url(task), data)

    assert response.status_code == 302
    state = ScheduleState.objects.get(pk=task.pk)
    assert (state.overlap, state.jitter, state.catchup_window) == ("buffer_one", 45, 3600)
    assert (state.next_slot_at, state.due_at, state.last_slot_at) == moved
    assert (state.first_seen_at, state.active) == (T0 - timedelta(days=1), True)
    [event] = events(action="periodic_task.changed", target=task.name)
    assert event.after == {"overlap": "buffer_one", "jitter": 45}
    assert event.actor_label == operator.email


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("catchup_window", "2592001", "from 0 to 2592000 seconds"),
        ("jitter", "86401", "from 0 to 86400 seconds"),
        ("catchup_window", "-5", "greater than or equal to 0"),
        ("overlap", "never", "Select a valid choice"),
    ],
)
def test_a_bad_policy_in_the_change_form_is_shown_and_nothing_is_saved(
    tenant_a, operator_client, field, value, message
):
    task = _sync_task()
    _scheduled(task)
    data = admin_form_data(operator_client, _change_url(task), **{field: value})

    response = operator_client.post(_change_url(task), data)

    assert response.status_code == 200
    assert message in response.content.decode()
    state = ScheduleState.objects.get(pk=task.pk)
    assert (state.overlap, state.catchup_window, state.jitter) == ("skip", 3600, None)


def test_a_task_the_scheduler_has_not_seen_yet_gets_its_policy_row_only_when_one_is_set(
    tenant_a, operator_client, settings
):
    settings.SCHEDULER_CATCHUP_WINDOW = 600
    task = _sync_task()
    ScheduleState.objects.filter(pk=task.pk).delete()

    untouched = admin_form_data(operator_client, _change_url(task))
    assert untouched["dispatch_state-0-catchup_window"] == 600
    assert operator_client.post(_change_url(task), untouched).status_code == 302
    assert not ScheduleState.objects.filter(pk=task.pk).exists()

    with time_machine.travel(T0, tick=False):
        data = admin_form_data(operator_client, _change_url(task), run_all=True)
        assert operator_client.post(_change_url(task), data).status_code == 302

    state = ScheduleState.objects.get(pk=task.pk)
    assert (state.run_all, state.catchup_window, state.first_seen_at, state.due_at) == (
        True,
        600,
        T0,
        None,
    )


# --- Pause and resume actions ----------------------------------------------------------------


def _action(client, action: str, tasks: list[PeriodicTask], **extra):
    data = {"action": action, "_selected_action": [task.pk for task in tasks], **extra}
    return client.post(TASKS_URL, data)


def test_the_pause_action_asks_for_a_note_then_pauses_every_selected_task(
    tenant_a, tenant_b, operator, operator_client
):
    tasks = [_sync_task("acme"), _sync_task("globex")]

    asked = _action(operator_client, "pause_tasks", tasks)
    assert asked.status_code == 200
    assert {"tenant:acme:sync", "tenant:globex:sync"} <= set(
        re.findall(r"<li>(tenant:\w+:sync)", asked.content.decode())
    )
    assert all(PeriodicTask.objects.get(pk=task.pk).enabled for task in tasks)

    done = _action(operator_client, "pause_tasks", tasks, apply="yes", note="Provider outage")

    assert done.status_code == 302
    for task in tasks:
        assert not PeriodicTask.objects.get(pk=task.pk).enabled
        assert schedule_pause_get(periodic_task_id=task.pk).note == "Provider outage"
    noted = events(action="periodic_task.changed")
    assert [(e.target, e.note, e.actor_label) for e in noted] == [
        ("tenant:acme:sync", "Provider outage", operator.email),
        ("tenant:globex:sync", "Provider outage", operator.email),
    ]
    listed = operator_client.get(TASKS_URL).content.decode()
    assert listed.count("Provider outage") == 2  # the paused column


def test_a_task_deleted_while_the_action_runs_is_reported_and_the_others_paused(
    tenant_a, tenant_b, operator_client, monkeypatch
):
    acme, globex = _sync_task("acme"), _sync_task("globex")
    gone = PeriodicTask.objects.get(pk=globex.pk)
    gone.delete()  # after the action read its selection, before it got to this task
    monkeypatch.setattr(
        platform_admin.PlatformPeriodicTaskAdmin,
        "_action_tasks",
        lambda self, request, queryset: [acme, gone],
    )

    done = _action(operator_client, "pause_tasks", [acme], apply="yes", note="Outage")

    assert done.status_code == 302
    shown = [str(m) for m in get_messages(done.wsgi_request)]
    assert shown == [
        "The periodic task 'tenant:globex:sync' no longer exists.",
        "1 task(s) paused.",
    ]
    assert schedule_pause_get(periodic_task_id=acme.pk).note == "Outage"


@pytest.mark.parametrize("note", ["", "   ", "x" * 501])
def test_the_pause_action_without_a_usable_note_pauses_nothing(tenant_a, operator_client, note):
    task = _sync_task()

    response = _action(operator_client, "pause_tasks", [task], apply="yes", note=note)

    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()
    assert PeriodicTask.objects.get(pk=task.pk).enabled
    assert schedule_pause_get(periodic_task_id=task.pk) is None


def test_the_resume_action_lifts_the_pause(tenant_a, operator_client):
    task = _sync_task()
    schedule_pause(task, note="maintenance")

    response = _action(operator_client, "resume_tasks", [task])

    assert response.status_code == 302
    assert PeriodicTask.objects.get(pk=task.pk).enabled
    assert schedule_pause_get(periodic_task_id=task.pk) is None


def test_too_many_tasks_at_once_are_refused(tenant_a, tenant_b, operator_client, monkeypatch):
    monkeypatch.setattr(platform_admin, "PAUSE_ACTION_MAX", 1)
    tasks = [_sync_task("acme"), _sync_task("globex")]

    response = _action(operator_client, "pause_tasks", tasks, apply="yes", note="all of them")

    assert response.status_code == 302
    assert all(PeriodicTask.objects.get(pk=task.pk).enabled for task in tasks)


@pytest.mark.parametrize("how", ["enable_tasks", "toggle_tasks", "change_form"])
def test_enabling_a_paused_task_in_the_admin_drops_its_pause(tenant_a, operator_client, how):
    task = _sync_task()
    schedule_pause(task, note="maintenance")

    if how == "change_form":
        data = admin_form_data(operator_client, _change_url(task), enabled=True)
        operator_client.post(_change_url(task), data)
    else:
        _action(operator_client, how, [task])
    _action(operator_client, "disable_tasks", [task])

    assert not PeriodicTask.objects.get(pk=task.pk).enabled
    assert schedule_pause_get(periodic_task_id=task.pk) is None  # disabled, not paused
