"""Tenant settings, pause and resume, creation and deletion in the trail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent
from scheduling.audit.services import Actor, acting_as, audit_record
from tenants.services import tenant_delete, tenant_pause, tenant_resume
from tests.audit.conftest import events

pytestmark = pytest.mark.django_db

SECRET = "tok-very-secret-123"


def test_an_interval_change_is_recorded_in_public_and_the_tenants_schema_only(
    tenant_a, tenant_b, admin_a
):
    with acting_as(Actor.for_user(admin_a, schema_name="acme")):
        tenant_a.sync_interval = timedelta(minutes=5)
        tenant_a.save()

    [public] = events(action="tenant.settings_changed")
    [own] = events("acme", action="tenant.settings_changed")
    assert (public.before, public.after) == ({"sync_interval": 900}, {"sync_interval": 300})
    assert (public.actor_kind, public.actor_label) == ("user", "admin@acme.test")
    assert public.actor_id == admin_a.public_id
    assert (public.tenant_slug, public.target) == ("acme", "tenant:acme")
    assert own.public_id == public.public_id and own.after == public.after
    assert events("globex", action="tenant.settings_changed") == []


def test_pause_and_resume_through_the_services_are_recorded_as_the_system(tenant_a):
    tenant_pause(tenant=tenant_a)
    tenant_resume(tenant=tenant_a)

    paused, resumed = events("acme", action__in=["tenant.paused", "tenant.resumed"])
    assert (paused.action, paused.before, paused.after) == (
        "tenant.paused",
        {"status": "active"},
        {"status": "paused"},
    )
    assert (resumed.action, resumed.after) == ("tenant.resumed", {"status": "active"})
    assert {paused.actor_kind, paused.actor_label} == {"system"}
    assert events(action="tenant.settings_changed") == []  # status_changed_at is no setting


def test_a_pause_saved_with_other_settings_is_two_events(tenant_a):
    tenant_a.status, tenant_a.name = "paused", "Acme Inc"
    tenant_a.save()

    [paused] = events(action="tenant.paused")
    [changed] = events(action="tenant.settings_changed")
    assert paused.after == {"status": "paused"}
    assert (changed.before, changed.after) == ({"name": "Acme Corp"}, {"name": "Acme Inc"})


def test_a_save_that_changes_no_audited_field_records_nothing(tenant_a):
    tenant_pause(tenant=tenant_a)
    count = len(events()) + len(events("acme"))

    tenant_a.save()
    tenant_a.status_changed_at = None  # bookkeeping, not a setting
    tenant_a.save()
    tenant_pause(tenant=tenant_a)  # already paused: the service writes nothing

    assert len(events()) + len(events("acme")) == count


def test_only_the_fields_a_save_writes_are_compared(tenant_a):
    tenant_a.name = "Never saved"
    tenant_a.status = "paused"
    tenant_a.save(update_fields=["status"])

    [paused] = events(action="tenant.paused")
    assert paused.after == {"status": "paused"}
    assert events(action="tenant.settings_changed") == []


@pytest.mark.parametrize(
    ("old", "new", "after"),
    [("", SECRET, "set"), (SECRET, SECRET + "-rotated", "changed"), (SECRET, "", "cleared")],
)
def test_the_source_token_is_recorded_as_set_changed_or_cleared_never_its_value(
    tenant_a, old, new, after
):
    tenant_a.source_token = old
    tenant_a.save()
    tenant_a.source_token = new
    tenant_a.source_kind, tenant_a.source_url = "http_json", "https://feed.example/records"
    tenant_a.save()

    last = events(action="tenant.settings_changed")[-1]
    assert last.before["source_token"] == ("set" if old else "not set")
    assert last.after["source_token"] == after
    assert last.after["source_kind"] == "http_json"
    stored = json.dumps([(e.before, e.after) for e in events() + events("acme")])
    assert SECRET not in stored


def test_a_rolled_back_change_leaves_no_event_in_either_schema(tenant_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        tenant_a.sync_interval = timedelta(minutes=30)
        tenant_a.save()
        tenant_a.source_kind = "http_json"  # without a URL: the database refuses it
        tenant_a.save()

    assert events(action="tenant.settings_changed") == []
    assert events("acme", action="tenant.settings_changed") == []


def test_creation_is_recorded_in_public_only(tenant_a):
    [created] = events(action="tenant.created", tenant_slug="acme")

    assert created.before == {}
    assert created.after["sync_interval"] == 900
    assert created.after["timezone"] == "Europe/Berlin"
    assert created.after["source_token"] == "not set"
    assert events("acme", action="tenant.created") == []  # its schema did not exist yet


def test_deletion_is_recorded_in_public_with_the_last_settings(tenant_a, tenant_b):
    with acting_as(Actor(kind="operator", label="ops@platform.test", id=tenant_a.public_id)):
        tenant_delete(tenant=tenant_b)

    [deleted] = events(action="tenant.deleted")
    assert (deleted.tenant_slug, deleted.actor_kind) == ("globex", "operator")
    assert deleted.before["name"] == "Globex" and deleted.after == {}


def test_an_explicit_platform_event_stays_in_public(tenant_a):
    audit_record(
        action=AuditEvent.Action.PERIODIC_TASK_RUN,
        target="platform:heartbeat",
        before={},
        after={},
        actor=Actor.system("bench"),
    )

    [event] = events(target="platform:heartbeat")
    assert (event.tenant_slug, event.actor_label) == ("", "system: bench")
    assert events("acme", target="platform:heartbeat") == []


def test_the_database_refuses_an_unknown_action_or_actor_kind(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(actor_kind="system", actor_label="x", action="bogus", target="t")
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(
            actor_kind="robot", actor_label="x", action="tenant.created", target="t"
        )
    with schema_context("public"):
        assert not AuditEvent.objects.filter(actor_label="x").exists()
