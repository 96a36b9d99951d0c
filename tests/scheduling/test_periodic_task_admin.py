"""The operators' list and change form of periodic tasks in the admin."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import formats
from django.utils import timezone as dj_timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)

from scheduling.platform.schedules import Interval, schedule_create
from tests.audit.conftest import events
from tests.conftest import logged_in
from tests.helpers import admin_form_data

pytestmark = pytest.mark.django_db

TASKS_URL = "/admin/django_celery_beat/periodictask/"


def _sync_task(slug: str) -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:sync")


def _row(html: str, name: str) -> str:
    [row] = [row for row in re.findall(r"<tr.*?</tr>", html, re.S) if f">{name}</a>" in row]
    return row


def _cell(row: str, column: str) -> str:
    return re.search(rf'<td class="field-{column}[^"]*">(.*?)</td>', row, re.S).group(1)


def _shown(value: datetime) -> str:
    return formats.localize(dj_timezone.template_localtime(value))


def _names_listed(client, query: str = "") -> set[str]:
    response = client.get(TASKS_URL + query)
    return {task.name for task in response.context["cl"].result_list}


def test_the_list_shows_each_task_with_its_tenant_kind_schedule_and_next_run(
    tenant_a, tenant_b, operator_client
):
    html = operator_client.get(TASKS_URL).content.decode()

    for slug in ("acme", "globex"):
        task = _sync_task(slug)
        row = _row(html, task.name)
        every = timedelta(**{task.interval.period: task.interval.every})
        assert _cell(row, "tenant") == slug
        assert _cell(row, "kind") == "sync"
        assert _cell(row, "schedule") == "every 15 minutes"
        assert _cell(row, "next_run") == _shown(task.date_changed + every)


def test_a_disabled_task_never_runs_and_an_unlinked_one_takes_its_tenant_from_its_header(
    tenant_a, operator_client
):
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(enabled=False)
    schedule_create(
        name="acme-hourly",
        task_name="scheduling.sync_tenant",
        when=Interval(seconds=3600),
        tenant=tenant_a,
    )

    html = operator_client.get(TASKS_URL).content.decode()

    assert _cell(_row(html, "tenant:acme:sync"), "next_run") == "never"
    hand_made = _row(html, "acme-hourly")
    assert (_cell(hand_made, "tenant"), _cell(hand_made, "kind")) == ("acme", "sync")


def test_the_tenant_filter_lists_only_that_tenants_tasks(tenant_a, tenant_b, operator_client):
    schedule_create(
        name="acme-hourly",
        task_name="scheduling.sync_tenant",
        when=Interval(seconds=3600),
        tenant=tenant_a,
    )
    schedule_create(
        name="heartbeat", task_name="scheduling.beat_heartbeat", when=Interval(seconds=60)
    )
    acme = set(
        PeriodicTask.objects.filter(name__startswith="tenant:acme:").values_list("name", flat=True)
    )

    assert _names_listed(operator_client, "?tenant=acme") == acme | {"acme-hourly"}
    assert _names_listed(operator_client, "?tenant=_platform") == {"heartbeat"}
    choices = operator_client.get(TASKS_URL).content.decode()
    assert "?tenant=acme" in choices and "?tenant=globex" in choices
    assert "platform (no tenant)" in choices


def test_re_pointing_a_tenants_task_to_another_tenant_is_refused(
    tenant_a, tenant_b, operator_client
):
    task = _sync_task("acme")
    url = f"{TASKS_URL}{task.pk}/change/"
    data = admin_form_data(operator_client, url, headers=json.dumps({"_schema_name": "globex"}))

    response = operator_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["headers"] == [
        "This is acme's sync task: its _schema_name header must stay 'acme'."
    ]
    assert json.loads(_sync_task("acme").headers) == {"_schema_name": "acme"}
    assert events(action="periodic_task.changed") == []


def test_a_tenants_task_cannot_become_another_kind_of_job(tenant_a, operator_client):
    task = _sync_task("acme")
    url = f"{TASKS_URL}{task.pk}/change/"
    data = admin_form_data(operator_client, url, regtask="scheduling.beat_heartbeat")

    response = operator_client.post(url, data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["regtask"] == [
        "This is acme's sync task: its task must stay a sync job."
    ]
    assert _sync_task("acme").task == "scheduling.sync_tenant"


@pytest.mark.parametrize("field", ["task", "regtask"])
def test_an_unregistered_task_name_is_refused(tenant_a, operator_client, field):
    task = _sync_task("acme")
    url = f"{TASKS_URL}{task.pk}/change/"
    changes = {"regtask": "", "task": ""} | {field: "os.system"}
    data = admin_form_data(operator_client, url, **changes)

    response = operator_client.post(url, data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    assert _sync_task("acme").task == "scheduling.sync_tenant"


def test_an_unregistered_task_name_is_refused_on_a_new_task(tenant_a, operator_client):
    data = admin_form_data(
        operator_client,
        f"{TASKS_URL}{_sync_task('acme').pk}/change/",
        name="by hand",
        regtask="",
        task="scheduling.no_such_job",
        headers="{}",
    )

    response = operator_client.post(f"{TASKS_URL}add/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["task"] == [
        "'scheduling.no_such_job' is not a registered job."
    ]
    assert not PeriodicTask.objects.filter(name="by hand").exists()


def test_a_tenants_task_keeps_its_schedule_editable(tenant_a, operator_client):
    task = _sync_task("acme")
    url = f"{TASKS_URL}{task.pk}/change/"
    nightly = CrontabSchedule.objects.create(minute="0", hour="2")

    response = operator_client.post(
        url, admin_form_data(operator_client, url, interval="", crontab=nightly.pk)
    )

    assert response.status_code == 302
    assert _sync_task("acme").crontab_id == nightly.pk


def test_tenant_users_cannot_reach_the_task_list(tenant_a, admin_a, tenant_b, outsider_b):
    for tenant, user in ((tenant_a, admin_a), (tenant_b, outsider_b)):
        client = logged_in(tenant, user)
        assert client.get(TASKS_URL).status_code == 404
        assert client.get(f"{TASKS_URL}{_sync_task('acme').pk}/change/").status_code == 404


def _more_tasks(count: int) -> None:
    schedules = {
        "interval": IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES),
        "crontab": CrontabSchedule.objects.create(minute="15", hour="3"),
        "solar": SolarSchedule.objects.create(event="sunrise", latitude=52.5, longitude=13.4),
        "clocked": ClockedSchedule.objects.create(clocked_time=datetime(2100, 1, 1, tzinfo=UTC)),
    }
    kinds = list(schedules)
    for number in range(count):
        kind = kinds[number % len(kinds)]
        PeriodicTask.objects.create(
            name=f"extra {number}",
            task="scheduling.sync_tenant",
            headers=json.dumps({"_schema_name": "globex"}),
            one_off=kind == "clocked",
            **{kind: schedules[kind]},
        )


def _changelist_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(TASKS_URL)
    assert response.status_code == 200
    return len(queries)


def test_the_list_reads_a_fixed_number_of_queries_whatever_the_number_of_tasks(
    tenant_a, tenant_b, operator_client
):
    PeriodicTask.objects.exclude(name__in=["tenant:acme:sync", "tenant:globex:sync"]).delete()
    few = _changelist_queries(operator_client)

    _more_tasks(10)
    many = _changelist_queries(operator_client)

    assert PeriodicTask.objects.count() == 12
    assert many == few


def test_the_list_shows_whether_each_task_is_enabled_its_last_run_and_run_count(
    tenant_a, tenant_b, operator_client
):
    last_run = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
    PeriodicTask.objects.filter(name="tenant:acme:sync").update(
        last_run_at=last_run, total_run_count=41
    )
    PeriodicTask.objects.filter(name="tenant:globex:sync").update(enabled=False)

    html = operator_client.get(TASKS_URL).content.decode()

    sync = _row(html, "tenant:acme:sync")
    assert _cell(sync, "last_run_at") == _shown(last_run)
    assert _cell(sync, "total_run_count") == "41"
    assert 'alt="True"' in _cell(sync, "enabled")
    assert 'alt="False"' in _cell(_row(html, "tenant:globex:sync"), "enabled")


def test_the_list_offers_run_now_enable_and_disable(tenant_a, operator_client):
    choices = operator_client.get(TASKS_URL).context["action_form"].fields["action"].choices

    assert {"run_tasks", "enable_tasks", "disable_tasks"} <= {value for value, _ in choices}


def _action(client, action: str, tasks: list[PeriodicTask]):
    return client.post(
        TASKS_URL, {"action": action, "_selected_action": [task.pk for task in tasks]}
    )


@pytest.mark.parametrize(
    ("action", "enabled_before", "enabled_after"),
    [("enable_tasks", False, True), ("disable_tasks", True, False)],
)
def test_enabling_and_disabling_in_the_admin_is_audited_and_moves_beats_change_tracker(
    tenant_a,
    tenant_b,
    operator,
    operator_client,
    time_machine,
    action,
    enabled_before,
    enabled_after,
):
    PeriodicTask.objects.filter(name__endswith=":sync").update(enabled=enabled_before)
    PeriodicTasks.update_changed()
    later = dj_timezone.now().replace(microsecond=0) + timedelta(minutes=5)
    time_machine.move_to(later, tick=False)

    response = _action(operator_client, action, [_sync_task("acme")])

    assert response.status_code == 302
    assert _sync_task("acme").enabled is enabled_after
    assert _sync_task("globex").enabled is enabled_before  # not selected, not touched
    assert PeriodicTasks.last_change() == later
    [event] = events(action="periodic_task.changed")
    assert (event.target, event.tenant_slug) == ("tenant:acme:sync", "acme")
    assert (event.before, event.after) == ({"enabled": enabled_before}, {"enabled": enabled_after})
    assert (event.actor_kind, event.actor_id) == ("operator", operator.public_id)
    assert [e.public_id for e in events("acme", action="periodic_task.changed")] == [
        event.public_id
    ]


SCHEDULE_ADMINS = {
    "intervalschedule": ("every", "period"),
    "crontabschedule": ("minute", "hour", "day_of_week", "day_of_month", "month_of_year"),
    "solarschedule": ("event", "latitude", "longitude"),
    "clockedschedule": ("clocked_time",),
}


@pytest.mark.parametrize("model", SCHEDULE_ADMINS)
def test_every_kind_of_schedule_can_be_added_and_changed_in_the_admin(operator_client, model):
    url = f"/admin/django_celery_beat/{model}/"

    response = operator_client.get(f"{url}add/")

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert set(SCHEDULE_ADMINS[model]) <= set(form.fields)
    assert operator_client.get(url).status_code == 200


def test_a_new_crontab_and_interval_can_be_saved(operator_client):
    added = {}
    for model, values in (
        ("intervalschedule", {"every": "7", "period": "minutes"}),
        ("crontabschedule", {"minute": "30", "hour": "4", "timezone": "Europe/Berlin"}),
    ):
        url = f"/admin/django_celery_beat/{model}/add/"
        added[model] = operator_client.post(url, admin_form_data(operator_client, url, **values))

    assert {model: response.status_code for model, response in added.items()} == {
        "intervalschedule": 302,
        "crontabschedule": 302,
    }
    assert IntervalSchedule.objects.filter(every=7, period="minutes").exists()
    crontab = CrontabSchedule.objects.get(minute="30", hour="4")
    assert (crontab.day_of_week, str(crontab.timezone)) == ("*", "Europe/Berlin")
