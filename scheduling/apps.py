from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    """The tenant-schema half of scheduling: synced records and run history."""

    name = "scheduling"
    verbose_name = "Scheduling"
