"""The Celery app shared by beat and every worker.

It is tenant-schemas-celery's CeleryApp: a task sent with the `_schema_name`
header runs with the database connection switched to that tenant's schema.
Tenant lookups are cached per worker for CELERY_TASK_TENANT_CACHE_SECONDS.
"""

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = CeleryApp("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
