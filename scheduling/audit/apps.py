from django.apps import AppConfig


class AuditConfig(AppConfig):
    """Who changed which schedule, when, from what to what.

    Installed in both schemas: public keeps the platform trail across tenants,
    each tenant schema keeps that tenant's own events.
    """

    name = "scheduling.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from scheduling.audit import signals  # noqa: F401
