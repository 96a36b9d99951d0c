from django.apps import AppConfig


class PlatformSchedulingConfig(AppConfig):
    """The public-schema half of scheduling: links from beat's rows to tenants."""

    name = "scheduling.platform"
    label = "scheduling_platform"
    verbose_name = "Platform scheduling"

    def ready(self):
        from scheduling.platform import signals  # noqa: F401
