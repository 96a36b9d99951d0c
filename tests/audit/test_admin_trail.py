"""Operator edits of periodic tasks in the admin, and the read-only trail there."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from scheduling.audit.services import Actor, acting_as
from tenants.services import tenant_pause
from tests.audit.conftest import events
from tests.conftest import logged_in
from tests.helpers import admin_form_data

pytestmark = pytest.mark.django_db

TASKS_URL = "/admin/django_celery_beat/periodictask/"


def _form_data(client, task: PeriodicTask, **changes) -> dict:
    return admin_form_data(client, f"{TASKS_URL}{task.pk}/change/", **changes)


def _sync_task(slug: str = "acme") -> PeriodicTask:
    return PeriodicTask.objects.get(name=f"tenant:{slug}:sync")


def test_an_operator_edit_in_the_change_form_is_recorded_with_before_and_after(
    tenant_a, tenant_b, operator, operator_client
):
    task = _sync_task()
    faster = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.MINUTES)

    response = operator_client.post(
        f"{TASKS_URL}{task.pk}/change/",
        _form_data(operator_client, task, interval=faster.pk, enabled=False),
    )

    assert response.status_code == 302
    [event] = events(action="periodic_task.changed")
    assert (event.before, event.after) == (
        {"enabled": True, "interval": 900},
        {"enabled": False, "interval": 120},
    )
    assert (event.actor_kind, event.actor_label, event.actor_id) == (
        "operator",
        "ops@platform.test",
        operator.public_id,
    )
    assert (event.target, event.tenant_slug) == ("tenant:acme:sync", "acme")
    assert [e.public_id for e in events("acme", action="periodic_task.changed")] == [
        event.public_id
    ]
    assert events("globex", action="periodic_task.changed") == []


def test_an_unchanged_form_saved_again_records_nothing(tenant_a, operator_client):
    task = _sync_task()

    operator_client.post(f"{TASKS_URL}{task.pk}/change/", _form_data(operator_client, task))

    assert events(action="periodic_task.changed") == []


def test_a_task_created_by_hand_finds_its_tenant_by_header(tenant_a, operator_client):
    interval = IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    template = _sync_task()
    data = _form_data(
        operator_client,
        template,
        name="acme one-off sync",
        interval=interval.pk,
        headers=json.dumps({"_schema_name": "acme"}),
    )

    response = operator_client.post(f"{TASKS_URL}add/", data)

    assert response.status_code == 302
    [created] = events("acme", action="periodic_task.created")
    assert created.before == {}
    assert created.after["interval"] == 30 and created.after["task"] == "scheduling.sync_tenant"
    assert created.actor_kind == "operator"


def test_a_header_naming_no_tenant_is_recorded_as_platform_wide(tenant_a, operator_client):
    data = _form_data(
        operator_client, _sync_task(), name="stray", headers='{"_schema_name": "nosuch"}'
    )

    operator_client.post(f"{TASKS_URL}add/", data)

    [created] = events(action="periodic_task.created")
    assert created.tenant_slug == ""


def test_deleting_a_task_in_the_admin_is_recorded(tenant_a, operator_client):
    task = _sync_task()

    response = operator_client.post(f"{TASKS_URL}{task.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    [deleted] = events("acme", action="periodic_task.deleted")
    assert deleted.before["name"] == "tenant:acme:sync" and deleted.after == {}
    assert deleted.tenant_slug == "acme" and deleted.actor_kind == "operator"


def _action(client, action: str, tasks: list[PeriodicTask], **filters):
    return client.post(
        TASKS_URL + ("?" + "&".join(f"{k}={v}" for k, v in filters.items()) if filters else ""),
        {"action": action, "_selected_action": [task.pk for task in tasks]},
    )


def test_the_bulk_disable_action_records_each_task_and_tells_beat(
    tenant_a, tenant_b, operator_client
):
    tasks = [_sync_task("acme"), _sync_task("globex")]
    changed_before = PeriodicTasks.last_change()

    response = _action(operator_client, "disable_tasks", tasks)

    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(pk__in=[t.pk for t in tasks], enabled=True).exists()
    assert PeriodicTasks.last_change() > changed_before
    disabled = events(action="periodic_task.changed")
    assert {(e.target, e.tenant_slug) for e in disabled} == {
        ("tenant:acme:sync", "acme"),
        ("tenant:globex:sync", "globex"),
    }
    assert {(json.dumps(e.before), json.dumps(e.after)) for e in disabled} == {
        ('{"enabled": true}', '{"enabled": false}')
    }
    assert [e.target for e in events("globex", action="periodic_task.changed")] == [
        "tenant:globex:sync"
    ]


def test_enabling_a_filtered_selection_records_the_tasks_that_changed(
    tenant_a, tenant_b, operator_client
):
    tenant_pause(tenant=tenant_a)  # disables acme's sync task; globex's stays enabled

    _action(operator_client, "enable_tasks", [_sync_task("acme"), _sync_task("globex")])

    [enabled] = events(action="periodic_task.changed")
    assert (enabled.target, enabled.after) == ("tenant:acme:sync", {"enabled": True})


def test_the_toggle_action_records_both_directions(tenant_a, tenant_b, operator_client):
    tenant_pause(tenant=tenant_b)

    _action(operator_client, "toggle_tasks", [_sync_task("acme"), _sync_task("globex")])

    after = {e.target: e.after for e in events(action="periodic_task.changed")}
    assert after == {
        "tenant:acme:sync": {"enabled": False},
        "tenant:globex:sync": {"enabled": True},
    }


def test_run_now_is_recorded_per_task(tenant_a, operator_client):
    task = _sync_task()
    task.queue = f"audit-test-{uuid.uuid4().hex}"  # a queue of its own, removed below
    task.save()
    broker = redis.Redis.from_url(settings.REDIS.client)
    try:
        response = _action(operator_client, "run_tasks", [task])
        [message] = [json.loads(raw) for raw in broker.lrange(task.queue, 0, -1)]
    finally:
        broker.delete(task.queue)

    assert response.status_code == 302
    # The task's own tenant header, not the public schema of the admin request.
    assert message["headers"]["_schema_name"] == "acme"
    assert message["headers"]["task"] == "scheduling.sync_tenant"
    [run] = events("acme", action="periodic_task.run")
    assert (run.target, run.actor_kind) == ("tenant:acme:sync", "operator")


def test_run_now_of_an_unknown_task_sends_and_records_nothing(tenant_a, operator_client):
    task = _sync_task()
    PeriodicTask.objects.filter(pk=task.pk).update(task="no.such.task")

    _action(operator_client, "run_tasks", [task])

    assert events(action="periodic_task.run") == []


def test_operators_read_the_trail_but_cannot_add_change_or_delete_it(tenant_a, operator_client):
    with acting_as(Actor.system("test")):
        tenant_pause(tenant=tenant_a)
    [event] = events(action="tenant.paused")
    url = f"/admin/audit/auditevent/{event.pk}/"

    listing = operator_client.get("/admin/audit/auditevent/?tenant_slug=acme").content.decode()

    assert "tenant:acme" in listing and "status: active → paused" in listing
    assert operator_client.get(f"{url}change/").status_code == 200  # a read-only view
    assert operator_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert operator_client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    assert events(action="tenant.paused") == [event]


def test_tenant_users_cannot_reach_the_trail_in_the_admin(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)

    assert client.get("/admin/audit/auditevent/").status_code == 404


def test_an_operator_edit_of_a_tenant_in_the_admin_is_recorded_as_the_operator(
    tenant_a, operator_client
):
    url = f"/admin/tenants/tenant/{tenant_a.pk}/change/"

    response = operator_client.post(
        url, admin_form_data(operator_client, url, sync_interval="00:02:00", status="paused")
    )

    assert response.status_code == 302
    paused, changed = events("acme", action__in=["tenant.paused", "tenant.settings_changed"])
    assert (changed.before, changed.after) == ({"sync_interval": 900}, {"sync_interval": 120})
    assert paused.after == {"status": "paused"}
    assert {paused.actor_kind, changed.actor_kind} == {"operator"}


def test_the_bulk_delete_action_records_each_task(tenant_a, tenant_b, operator_client):
    tasks = [_sync_task("acme"), _sync_task("globex")]

    response = operator_client.post(
        TASKS_URL,
        {"action": "delete_selected", "post": "yes", "_selected_action": [t.pk for t in tasks]},
    )

    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(pk__in=[t.pk for t in tasks]).exists()
    assert {e.tenant_slug for e in events(action="periodic_task.deleted")} == {"acme", "globex"}
    assert [e.target for e in events("acme", action="periodic_task.deleted")] == [
        "tenant:acme:sync"
    ]


def test_the_operator_schedule_api_records_each_change_with_its_actor(tenant_a, tenant_b, operator):
    from scheduling.platform.schedules import (
        Interval,
        schedule_create,
        schedule_delete,
        schedule_disable,
        schedule_update,
    )

    with acting_as(Actor.for_user(operator)):
        schedule_create(
            name="acme-hourly",
            task_name="scheduling.sync_tenant",
            when=Interval(seconds=3600),
            tenant=tenant_a,
        )
        schedule_update(name="acme-hourly", when=Interval(seconds=7200))
        schedule_update(name="acme-hourly", when=Interval(seconds=7200))  # no change: no event
        schedule_disable(name="acme-hourly")
        schedule_delete(name="acme-hourly")

    trail = [(e.action, e.actor_kind) for e in events("acme", target="acme-hourly")]
    assert trail == [
        ("periodic_task.created", "operator"),
        ("periodic_task.changed", "operator"),
        ("periodic_task.changed", "operator"),
        ("periodic_task.deleted", "operator"),
    ]
    changed = events("acme", target="acme-hourly", action="periodic_task.changed")
    assert changed[1].before == {"enabled": True} and changed[1].after == {"enabled": False}
    assert events("globex", target="acme-hourly") == []


def test_the_admin_refuses_headers_beat_could_not_load(tenant_a, operator_client):
    task = _sync_task()
    url = f"{TASKS_URL}{task.pk}/change/"

    response = operator_client.post(url, _form_data(operator_client, task, headers="[]"))

    assert response.status_code == 200
    assert "The headers must be a JSON object" in response.content.decode()
    assert json.loads(_sync_task().headers) == {"_schema_name": "acme"}
    assert events(action="periodic_task.changed") == []
