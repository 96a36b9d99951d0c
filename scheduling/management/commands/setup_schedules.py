"""Create or update the platform's own periodic tasks; running it again writes nothing."""

from django.core.management.base import BaseCommand

from scheduling.platform.schedules import platform_schedules_ensure


class Command(BaseCommand):
    help = "Create or update the platform schedules: heartbeat, run history cleanup, reconcile."

    def handle(self, *args, **options):
        for change in platform_schedules_ensure():
            self.stdout.write(
                change.describe() if change.written else f"unchanged {change.task.name}"
            )
