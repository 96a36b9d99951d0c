"""Demo data for `make run`: tenants acme and globex, their people, and an operator."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone
from django_tenants.utils import schema_context

from scheduling.models import UserSchedule
from scheduling.services import sync_run, user_schedule_update
from tenants.accounts.models import User
from tenants.models import Tenant
from tenants.services import tenant_create

DEMO_PASSWORD = "demo-pass-2024"
# Digest settings per demo person. member1's hourly digest is computed from an
# hour ago, so it is due at once and the first dispatcher run sends it.
DEMO_DIGESTS = {
    "admin": {"frequency": "daily", "hour": 9},
    "member1": {"frequency": "hourly", "since": timedelta(hours=1)},
    "member2": {"frequency": "weekly", "hour": 8, "weekday": 0, "timezone_name": "Asia/Tokyo"},
}
DEMO_TENANTS = [
    ("acme", "Acme Corp", "Europe/Berlin"),
    ("globex", "Globex", "America/New_York"),
]


class Command(BaseCommand):
    help = "Create the demo tenants and accounts if they are missing (idempotent)."

    def handle(self, *args, **options):
        if not User.objects.filter(email="operator@localhost").exists():
            User.objects.create_superuser("operator@localhost", DEMO_PASSWORD)
        for slug, name, zone in DEMO_TENANTS:
            if not Tenant.objects.filter(schema_name=slug).exists():
                created = tenant_create(
                    name=name,
                    slug=slug,
                    admin_email=f"admin@{slug}.test",
                    admin_password=DEMO_PASSWORD,
                    timezone_name=zone,
                    sync_interval=timedelta(minutes=1),  # runs show up soon after start
                )
                with schema_context(slug):  # records from the start, for the first digests
                    sync_run(tenant=created.tenant, task_id="seed_demo")
            with schema_context(slug):
                for number in (1, 2):
                    email = f"member{number}@{slug}.test"
                    if not User.objects.filter(email=email).exists():
                        User.objects.create_user(email, DEMO_PASSWORD)
                self._digests_seed(slug)
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        self.stdout.write("  operator  operator@localhost           http://localhost:<port>/admin/")
        for slug, _, _ in DEMO_TENANTS:
            self.stdout.write(
                f"  {slug:<9} admin@{slug}.test, member1@{slug}.test, member2@{slug}.test"
            )

    def _digests_seed(self, slug: str) -> None:
        for person, rule in DEMO_DIGESTS.items():
            user = User.objects.get(email=f"{person}@{slug}.test")
            if UserSchedule.objects.filter(user=user).exists():
                continue  # keep whatever the person chose since
            fields = {key: value for key, value in rule.items() if key != "since"}
            now = timezone.now() - rule.get("since", timedelta())
            user_schedule_update(user=user, now=now, **fields)
