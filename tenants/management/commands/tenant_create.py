"""Onboard a tenant.

manage.py tenant_create --name "Acme Corp" --slug acme --admin-email a@acme.test
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from scheduling.intervals import IntervalSyntaxError, parse_interval
from tenants.services import tenant_create


def validation_message(error: ValidationError) -> str:
    """One line from a ValidationError, naming the fields it concerns."""
    if hasattr(error, "error_dict"):
        labels = {"schema_name": "slug: ", "__all__": ""}
        return "; ".join(
            f"{labels.get(field, field + ': ')}{' '.join(messages)}"
            for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)


class Command(BaseCommand):
    help = "Create a tenant with its schema, primary domain and first tenant admin."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", required=True, help="schema name and host label, e.g. acme")
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-password", help="generated and printed when omitted")
        parser.add_argument("--timezone", default="UTC", help="IANA name, e.g. Europe/Berlin")
        parser.add_argument("--sync-interval", help="e.g. 90s, 15m, 1h30m, 1d")
        parser.add_argument(
            "--method",
            choices=["auto", "clone", "migrate"],
            default="auto",
            help="how to build the schema (default: clone the template, else migrate)",
        )

    def handle(self, *args, **options):
        try:
            interval = options["sync_interval"] and parse_interval(options["sync_interval"])
            created = tenant_create(
                name=options["name"],
                slug=options["slug"],
                admin_email=options["admin_email"],
                admin_password=options["admin_password"],
                timezone_name=options["timezone"],
                sync_interval=interval or None,
                method=options["method"],
            )
        except IntervalSyntaxError as exc:
            raise CommandError(f"sync-interval: {exc}", returncode=2) from None
        except ValidationError as exc:
            raise CommandError(validation_message(exc), returncode=2) from None
        tenant = created.tenant
        self.stdout.write(f"Created {tenant.name} ({created.method}): {tenant.site_url}")
        self.stdout.write(f"Tenant admin: {created.admin.email}")
        if created.generated_password:
            self.stdout.write(f"Generated password (shown once): {created.generated_password}")
