"""Running the project's own commands as real subprocesses against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.admin.widgets import AdminSplitDateTime
from django.forms import CheckboxInput
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    if db["HOST"].startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={db['HOST']}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{auth}@{db['HOST']}{port}/{db['NAME']}"


def run_manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """`python manage.py ARGS` on the test database; returns the CompletedProcess."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
