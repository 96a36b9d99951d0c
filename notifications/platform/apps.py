from django.apps import AppConfig


class PlatformNotificationsConfig(AppConfig):
    """The public-schema half of notifications: every tenant's deliveries, for operators."""

    name = "notifications.platform"
    label = "notifications_platform"
    verbose_name = "Deliveries"

    def ready(self):
        from notifications.platform import admin  # noqa: F401
