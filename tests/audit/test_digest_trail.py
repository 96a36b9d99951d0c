"""Users' digest settings in the trail, kept to each tenant's own schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_tenants.utils import schema_context

from notifications.services import digests_dispatch
from scheduling.audit.services import Actor, acting_as
from scheduling.models import UserSchedule
from scheduling.services import user_schedule_update
from tests.audit.conftest import events

pytestmark = pytest.mark.django_db

NOON_UTC = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def _update(user, slug="acme", **fields) -> UserSchedule:
    with schema_context(slug), acting_as(Actor.for_user(user)):
        return user_schedule_update(user=user, now=NOON_UTC, **fields)


def test_a_first_digest_setting_is_recorded_with_an_empty_before(member_a):
    _update(member_a, frequency="daily", hour=9)

    [event] = events("acme", action="digest.changed")
    assert event.before == {}
    assert event.after == {
        "frequency": "daily",
        "hour": 9,
        "weekday": None,
        "timezone": "Europe/Berlin",
        "enabled": True,
        "send_when_empty": False,
    }
    assert (event.actor_kind, event.actor_label, event.actor_id) == (
        "user",
        "member@acme.test",
        member_a.public_id,
    )
    assert (event.target, event.tenant_slug) == ("member@acme.test", "acme")
    assert [e.public_id for e in events(action="digest.changed")] == [event.public_id]


def test_a_change_records_only_the_changed_fields(member_a):
    _update(member_a, frequency="daily", hour=9)
    _update(member_a, frequency="weekly", hour=9, weekday=0)

    last = events("acme", action="digest.changed")[-1]
    assert (last.before, last.after) == (
        {"frequency": "daily", "weekday": None},
        {"frequency": "weekly", "weekday": 0},
    )


def test_saving_the_same_settings_again_records_nothing(member_a):
    _update(member_a, frequency="hourly")
    _update(member_a, frequency="hourly")

    assert len(events("acme", action="digest.changed")) == 1


def test_the_systems_due_time_bookkeeping_is_not_audited(member_a):
    schedule = _update(member_a, frequency="hourly")

    with schema_context("acme"):
        assert digests_dispatch(now=NOON_UTC + timedelta(hours=3)) == 1  # moves next_due_at
        schedule.refresh_from_db()
        schedule.last_sent_at = NOON_UTC
        schedule.next_due_at = NOON_UTC + timedelta(hours=5)
        schedule.save()

    assert len(events("acme", action="digest.changed")) == 1


def test_a_deleted_schedule_is_recorded_with_its_last_settings(member_a):
    schedule = _update(member_a, frequency="weekly", hour=7, weekday=4)

    with schema_context("acme"):
        schedule.delete()

    [deleted] = events("acme", action="digest.deleted")
    assert deleted.before["frequency"] == "weekly" and deleted.after == {}
    assert deleted.actor_kind == "system"  # no request or acting_as around the delete


def test_an_outsiders_events_never_show_in_another_tenants_schema(member_a, outsider_b):
    _update(member_a, frequency="hourly")
    _update(outsider_b, slug="globex", frequency="daily", hour=6)

    [ours] = events("acme", action="digest.changed")
    [theirs] = events("globex", action="digest.changed")
    assert ours.target == "member@acme.test" and theirs.target == "outsider@globex.test"
    assert events("acme", tenant_slug="globex") == []
    assert events("globex", tenant_slug="acme") == []
    assert {e.tenant_slug for e in events(action="digest.changed")} == {"acme", "globex"}
