from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """The tenant-schema half of scheduling: synced records and run history."""

    name = "scheduling"
    verbose_name = "Scheduling"

    def ready(self):
        # Celery signal receivers recording job metrics; they fire in the workers.
        from scheduling import task_signals  # noqa: F401
