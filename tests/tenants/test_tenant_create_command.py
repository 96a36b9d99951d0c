from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context, schema_exists

from tenants.accounts.models import User
from tenants.models import Tenant
from tests.factories import TenantFactory
from tests.helpers import run_manage

pytestmark = pytest.mark.django_db


def test_it_creates_a_tenant_and_prints_its_url(capsys):
    call_command(
        "tenant_create",
        "--name",
        "Acme Corp",
        "--slug",
        "acme",
        "--admin-email",
        "a@acme.test",
        "--admin-password",
        "a-long-enough-secret",
        "--timezone",
        "Europe/Berlin",
        "--sync-interval",
        "15m",
    )

    out = capsys.readouterr().out
    assert "http://acme.localhost/" in out
    assert "Generated password" not in out
    tenant = Tenant.objects.get(schema_name="acme")
    assert (tenant.timezone, tenant.sync_interval.total_seconds()) == ("Europe/Berlin", 900)
    with schema_context("acme"):
        assert User.objects.get().check_password("a-long-enough-secret")


def test_without_a_password_it_prints_a_generated_one(capsys):
    call_command(
        "tenant_create", "--name", "Acme", "--slug", "acme", "--admin-email", "a@acme.test"
    )

    line = next(
        x for x in capsys.readouterr().out.splitlines() if x.startswith("Generated password")
    )
    with schema_context("acme"):
        assert User.objects.get().check_password(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slug", "acme"], "slug: A tenant with this slug already exists."),
        (
            ["--slug", "new", "--timezone", "Europe/Atlantis"],
            "timezone: Europe/Atlantis is not an IANA",
        ),
        (["--slug", "new", "--sync-interval", "soon"], "sync-interval: 'soon' is not an interval"),
        (
            ["--slug", "new", "--sync-interval", "8d"],
            "sync_interval: The sync interval must be between",
        ),
        (["--slug", "New!"], "slug: A slug may hold lowercase letters"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2_and_creates_nothing(extra, message):
    TenantFactory(name="Existing", slug="acme")
    arguments = ["tenant_create", "--name", "Fresh", "--admin-email", "a@fresh.test", *extra]

    with pytest.raises(CommandError) as raised:
        call_command(*arguments)

    assert raised.value.returncode == 2
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert list(Tenant.objects.values_list("schema_name", flat=True)) == ["acme"]
    assert not schema_exists("new")


def test_the_process_exits_2_with_the_error_on_stderr():
    result = run_manage(
        "tenant_create",
        "--name",
        "Acme",
        "--slug",
        "acme",
        "--admin-email",
        "a@acme.test",
        "--timezone",
        "Moon/Base",
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "CommandError: timezone: Moon/Base is not an IANA time zone name, "
        "such as Europe/Berlin or UTC."
    ]
