from tenant_schemas_celery.app import CeleryApp

from config.celery import app


def test_the_celery_app_keeps_the_tenant_header_and_caches_tenants():
    assert isinstance(app, CeleryApp)
    assert app.conf.task_tenant_cache_seconds == 30
    assert app.conf.beat_scheduler == "scheduling.dispatch.scheduler:DueTimeScheduler"
    assert app.conf.task_serializer == "json"
