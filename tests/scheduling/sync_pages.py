"""Helpers for the tests of the sync pages: runs in a tenant's schema, clients, page text."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling.models import SyncRun
from tests.factories import PASSWORD


def runs_create(
    tenant,
    count: int,
    *,
    status: str = SyncRun.Status.OK,
    newest: datetime | None = None,
    error: str = "",
) -> list[SyncRun]:
    """`count` finished runs in the tenant's schema, a minute apart, the newest at `newest`."""
    newest = newest or timezone.now()
    runs = [
        SyncRun(
            started_at=newest - timedelta(minutes=index),
            finished_at=newest - timedelta(minutes=index) + timedelta(seconds=2),
            status=status,
            created_count=index,
            updated_count=1,
            unchanged_count=7,
            error=error,
        )
        for index in range(count)
    ]
    with schema_context(tenant.schema_name):
        return SyncRun.objects.bulk_create(runs)


def sync_task(tenant) -> PeriodicTask:
    return PeriodicTask.objects.select_related("interval").get(name=f"tenant:{tenant.slug}:sync")


def csrf_logged_in(tenant, user) -> Client:
    """A signed-in client that, like a browser, is checked for CSRF tokens."""
    client = Client(enforce_csrf_checks=True, HTTP_HOST=tenant.primary_host)
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/login/", {"username": user.email, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, "login failed"
    return client


def text(response) -> str:
    """The page's visible text, tags dropped and white space collapsed."""
    body = re.sub(r"<[^>]+>", " ", response.content.decode())
    return re.sub(r"\s+", " ", body).strip()


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]
