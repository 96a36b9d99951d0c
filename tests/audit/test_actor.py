"""Who the trail names: the request's user or operator, else the system, never a stale one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.signals import template_rendered
from django_tenants.utils import schema_context

from scheduling.audit.middleware import AuditActorMiddleware
from scheduling.audit.services import Actor, acting_as, actor_current
from tenants.accounts.models import User
from tests.audit.conftest import events
from tests.conftest import logged_in, site_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def _actor_seen_by_view(user, schema: str = "public") -> Actor:
    seen: list[Actor] = []

    def view(request):
        seen.append(actor_current())
        return HttpResponse()

    request = RequestFactory().get("/")
    request.user = user
    with schema_context(schema):
        AuditActorMiddleware(view)(request)
    return seen[0]


def test_the_default_actor_is_the_system():
    assert actor_current() == Actor.system()
    assert Actor.system("reconcile_schedules").label == "system: reconcile_schedules"


def test_acting_as_is_undone_when_the_block_ends_even_by_an_error(operator):
    with pytest.raises(RuntimeError), acting_as(Actor.for_user(operator)):
        assert actor_current().kind == "operator"
        raise RuntimeError

    assert actor_current() == Actor.system()


def test_staff_are_operators_in_public_only(operator, tenant_a):
    with schema_context("acme"):
        staff_in_tenant = User.objects.create_user("x@acme.test", PASSWORD, is_staff=True)

    assert Actor.for_user(operator).kind == "operator"
    assert Actor.for_user(staff_in_tenant, schema_name="acme").kind == "user"


def test_the_middleware_runs_a_request_as_its_signed_in_person(operator, member_a):
    as_operator = _actor_seen_by_view(operator)
    as_member = _actor_seen_by_view(member_a, schema="acme")

    assert (as_operator.kind, as_operator.label, as_operator.id) == (
        "operator",
        "ops@platform.test",
        operator.public_id,
    )
    assert (as_member.kind, as_member.label) == ("user", "member@acme.test")
    assert _actor_seen_by_view(AnonymousUser()) == Actor.system()
    assert actor_current() == Actor.system()  # nothing left behind for the next request


def test_the_middleware_resets_the_actor_when_the_view_fails(operator):
    def view(request):
        raise ValueError

    request = RequestFactory().get("/")
    request.user = operator
    with pytest.raises(ValueError):
        AuditActorMiddleware(view)(request)

    assert actor_current() == Actor.system()


def test_a_signed_in_request_does_not_leak_its_actor_to_the_next(operator_client, tenant_a):
    assert operator_client.get("/admin/").status_code == 200
    assert actor_current() == Actor.system()

    site_client(tenant_a).get("/login/")  # an anonymous request afterwards
    tenant_a.sync_interval = timedelta(minutes=3)
    tenant_a.save()  # outside any request: the system

    [event] = events(action="tenant.settings_changed")
    assert event.actor_kind == "system"


def test_a_tenant_admins_session_is_a_user_not_an_operator(tenant_a, admin_a):
    client = logged_in(tenant_a, admin_a)
    seen: list[Actor] = []

    # Any change made while this request runs would be attributed to the tenant admin.
    def capture(**kwargs):
        seen.append(actor_current())

    template_rendered.connect(capture)
    try:
        assert client.get("/").status_code == 200
    finally:
        template_rendered.disconnect(capture)

    assert {(a.kind, a.label) for a in seen} == {("user", "admin@acme.test")}
