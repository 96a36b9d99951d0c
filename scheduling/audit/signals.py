"""Thin receivers: each is one call to an audit service.

PeriodicTask has none on purpose: beat saves its rows all the time, so operator
edits are recorded by the admin (scheduling/audit/admin.py) instead.
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from scheduling.audit import services
from scheduling.models import UserSchedule
from tenants.models import Tenant


def _fields(update_fields) -> frozenset[str] | None:
    return None if update_fields is None else frozenset(update_fields)


@receiver(pre_save, sender=Tenant, dispatch_uid="audit_tenant_snapshot")
def tenant_saving(sender, instance: Tenant, raw=False, update_fields=None, **kwargs) -> None:
    if not raw:
        services.tenant_audit_snapshot(tenant=instance, update_fields=_fields(update_fields))


@receiver(post_save, sender=Tenant, dispatch_uid="audit_tenant_saved")
def tenant_saved(sender, instance: Tenant, created=False, raw=False, **kwargs) -> None:
    if not raw:
        services.tenant_audit_saved(tenant=instance, created=created)


@receiver(post_delete, sender=Tenant, dispatch_uid="audit_tenant_deleted")
def tenant_deleted(sender, instance: Tenant, **kwargs) -> None:
    services.tenant_audit_deleted(tenant=instance)


@receiver(pre_save, sender=UserSchedule, dispatch_uid="audit_user_schedule_snapshot")
def user_schedule_saving(
    sender, instance: UserSchedule, raw=False, update_fields=None, **kwargs
) -> None:
    if not raw:
        services.user_schedule_audit_snapshot(
            schedule=instance, update_fields=_fields(update_fields)
        )


@receiver(post_save, sender=UserSchedule, dispatch_uid="audit_user_schedule_saved")
def user_schedule_saved(sender, instance: UserSchedule, created=False, raw=False, **kwargs) -> None:
    if not raw:
        services.user_schedule_audit_saved(schedule=instance, created=created)


@receiver(post_delete, sender=UserSchedule, dispatch_uid="audit_user_schedule_deleted")
def user_schedule_deleted(sender, instance: UserSchedule, **kwargs) -> None:
    services.user_schedule_audit_deleted(schedule=instance)
