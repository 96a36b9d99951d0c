"""The audit trail in the operators' admin shows why: the note given with a change."""

from __future__ import annotations

import pytest

from scheduling.audit.services import Actor, acting_as
from tenants.services import tenant_pause, tenant_resume
from tests.audit.conftest import events

pytestmark = pytest.mark.django_db

EVENTS_URL = "/admin/audit/auditevent/"


def test_the_trail_lists_each_events_note_and_shows_it_in_full_on_the_event(
    tenant_a, operator_client
):
    long_note = "Card declined; " * 20
    with acting_as(Actor.system("test")):
        tenant_pause(tenant=tenant_a, note="Customer asked for a break")
        tenant_resume(tenant=tenant_a, note=long_note)
    paused = events(action="tenant.paused")[0]

    listing = operator_client.get(EVENTS_URL).content.decode()
    detail = operator_client.get(f"{EVENTS_URL}{paused.pk}/change/").content.decode()

    assert '<th scope="col" class="column-note_shown">' in listing
    assert '<td class="field-note_shown">Customer asked for a break</td>' in listing
    assert f'<td class="field-note_shown">{long_note[:119]}…</td>' in listing
    assert "Customer asked for a break" in detail and "Note:" in detail
