"""An operator signed in to the operator site, and reads of each schema's trail."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.admin.widgets import AdminSplitDateTime
from django.forms import CheckboxInput
from django.test import Client
from django_tenants.utils import schema_context

from scheduling.audit.models import AuditEvent
from tenants.accounts.models import User
from tests.factories import PASSWORD


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_user("ops@platform.test", PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client(HTTP_HOST=settings.BASE_DOMAIN)
    response = client.post("/login/", {"username": operator.email, "password": PASSWORD})
    assert response.status_code == 302, "operator login failed"
    return client


def events(schema: str = "public", **filters) -> list[AuditEvent]:
    """The events stored in `schema`, oldest first."""
    with schema_context(schema):
        return list(AuditEvent.objects.filter(**filters).order_by("occurred_at", "id"))


def admin_form_data(client: Client, url: str, **changes) -> dict:
    """An admin change form's own values, as a browser posts them back, with `changes`."""
    context = client.get(url).context
    fields = list(context["adminform"].form)
    for inline in context["inline_admin_formsets"]:
        fields += list(inline.formset.management_form)
        fields += [field for form in inline.formset.forms for field in form]
    data: dict = {}
    for field in fields:
        value = changes.get(field.name, field.value())
        widget = field.field.widget
        if isinstance(widget, AdminSplitDateTime):
            if value:
                raise NotImplementedError("split date-times with a value")
            data |= {f"{field.html_name}_0": "", f"{field.html_name}_1": ""}
        elif isinstance(widget, CheckboxInput):
            if value:
                data[field.html_name] = "on"
        else:
            data[field.html_name] = "" if value is None else value
    return data
