"""Repair drift between tenants and their periodic tasks, printing what changed."""

from django.core.management.base import BaseCommand

from scheduling.platform.services import schedules_reconcile


class Command(BaseCommand):
    help = "Check every tenant against its periodic tasks and repair any drift."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report, change nothing")

    def handle(self, *args, **options):
        changes = schedules_reconcile(dry_run=options["dry_run"])
        prefix = "would be " if options["dry_run"] else ""
        for change in changes:
            self.stdout.write(f"{prefix}{change}")
        self.stdout.write(f"{len(changes)} change(s){' (dry run)' if options['dry_run'] else ''}.")
