"""Thin receivers: each is one call to a service."""

from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from scheduling.platform.services import sync_schedule_ensure, tenant_schedules_remove
from tenants.models import Tenant


@receiver(post_save, sender=Tenant, dispatch_uid="tenant_sync_schedule")
def tenant_saved(sender, instance: Tenant, raw: bool = False, **kwargs) -> None:
    if not raw:
        sync_schedule_ensure(tenant=instance)


@receiver(pre_delete, sender=Tenant, dispatch_uid="tenant_schedules_remove")
def tenant_deleting(sender, instance: Tenant, **kwargs) -> None:
    tenant_schedules_remove(tenant=instance)
