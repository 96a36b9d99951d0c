"""Thin receivers: each is one call to a service."""

from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from scheduling.models import UserSchedule
from scheduling.platform.services import (
    digest_dispatcher_ensure,
    tenant_schedules_ensure,
    tenant_schedules_remove,
)
from tenants.models import Tenant
from tenants.selectors import tenant_current


@receiver(post_save, sender=Tenant, dispatch_uid="tenant_schedules_ensure")
def tenant_saved(sender, instance: Tenant, raw: bool = False, **kwargs) -> None:
    if not raw:
        tenant_schedules_ensure(tenant=instance)


@receiver(pre_delete, sender=Tenant, dispatch_uid="tenant_schedules_remove")
def tenant_deleting(sender, instance: Tenant, **kwargs) -> None:
    tenant_schedules_remove(tenant=instance)


@receiver(post_save, sender=UserSchedule, dispatch_uid="user_schedule_saved")
@receiver(post_delete, sender=UserSchedule, dispatch_uid="user_schedule_deleted")
def user_schedule_changed(sender, instance: UserSchedule, raw: bool = False, **kwargs) -> None:
    if not raw:
        digest_dispatcher_ensure(tenant=tenant_current())
