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
