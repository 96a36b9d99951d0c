"""Tenant lifecycle: onboarding, pause, resume and deletion."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context

from scheduling.audit.services import (
    audit_noted,
    periodic_task_snapshots,
    periodic_tasks_audit_run,
)
from scheduling.platform.models import TenantTask
from scheduling.platform.services import periodic_task_run_now, tenant_task_name
from tenants.accounts.models import User
from tenants.models import Domain, Tenant
from tenants.provisioning import Method, schema_drop, tenant_schema_provision


@dataclass(frozen=True)
class TenantCreated:
    tenant: Tenant
    admin: User
    method: str  # "clone" or "migrate"
    generated_password: str | None  # set when the caller gave no password


def _admin_validate(*, email: str, password: str | None) -> None:
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"admin_email": f"{email!r} is not a valid email address."}) from None
    if password is not None:
        try:
            validate_password(password, user=User(email=email))
        except ValidationError as exc:
            raise ValidationError({"admin_password": exc.messages}) from None


def tenant_validate(
    *,
    name: str,
    slug: str,
    timezone_name: str = "UTC",
    sync_interval: timedelta | None = None,
) -> Tenant:
    """The unsaved tenant these values make, once every rule of a new tenant holds
    (fields, unique slug and name, a free host); a ValidationError keyed by field otherwise."""
    tenant = Tenant(
        name=name.strip(),
        schema_name=slug,
        timezone=timezone_name,
        sync_interval=sync_interval or settings.TENANT_SYNC_INTERVAL_DEFAULT,
    )
    tenant.full_clean()
    host = tenant.primary_host
    if Domain.objects.filter(domain=host).exists():
        raise ValidationError({"schema_name": f"The host {host} is already in use."})
    return tenant


def _tenant_provision(*, tenant: Tenant, method: Method) -> str:
    """Save a validated tenant with its schema and primary domain; returns how the schema was
    made. Call it inside a transaction: PostgreSQL DDL is transactional, so a failure
    anywhere in that transaction leaves no schema, row or domain."""
    tenant.save()
    how = tenant_schema_provision(schema_name=tenant.schema_name, method=method)
    Domain.objects.create(domain=tenant.primary_host, tenant=tenant, is_primary=True)
    return how


def _integrity_refused(exc: IntegrityError) -> ValidationError:
    # A concurrent onboarding took the slug, name or host between the checks and the insert.
    return ValidationError(f"The tenant could not be created: {exc}")


def tenant_create(
    *,
    name: str,
    slug: str,
    admin_email: str,
    admin_password: str | None = None,
    timezone_name: str = "UTC",
    sync_interval: timedelta | None = None,
    method: Method = "auto",
) -> TenantCreated:
    """Onboard a tenant: schema, primary domain and first admin, all or nothing.

    Everything runs in one transaction, DDL included (PostgreSQL DDL is
    transactional), so a failure at any step leaves no schema, row or domain.
    Raises ValidationError for bad input, before anything is written.
    """
    tenant = tenant_validate(
        name=name, slug=slug, timezone_name=timezone_name, sync_interval=sync_interval
    )
    admin_email = admin_email.strip().lower()
    _admin_validate(email=admin_email, password=admin_password)

    generated = None
    if admin_password is None:
        generated = admin_password = secrets.token_urlsafe(12)
    password_hash = make_password(admin_password)  # slow on purpose: keep it out of the transaction

    try:
        with transaction.atomic():
            how = _tenant_provision(tenant=tenant, method=method)
            with schema_context(tenant.schema_name):
                admin = User(email=admin_email, role=User.Role.ADMIN, password=password_hash)
                admin.save()
    except IntegrityError as exc:
        raise _integrity_refused(exc) from exc
    return TenantCreated(tenant=tenant, admin=admin, method=how, generated_password=generated)


def tenant_provision(
    *,
    name: str,
    slug: str,
    timezone_name: str = "UTC",
    sync_interval: timedelta | None = None,
    method: Method = "auto",
) -> Tenant:
    """A tenant with its schema and primary domain but no users and no data, all or nothing.

    For schedules_import, which brings a tenant's schedules to another
    database but not its people or records; a first admin is added afterwards.
    Raises ValidationError for bad input, before anything is written.
    """
    tenant = tenant_validate(
        name=name, slug=slug, timezone_name=timezone_name, sync_interval=sync_interval
    )
    try:
        with transaction.atomic():
            _tenant_provision(tenant=tenant, method=method)
    except IntegrityError as exc:
        raise _integrity_refused(exc) from exc
    return tenant


def _status_set(*, tenant: Tenant, status: str) -> bool:
    # The row, its periodic tasks and the audit event change together; the row lock
    # makes two admins pausing at once record one pause, not two.
    with transaction.atomic():
        stored = Tenant.objects.select_for_update().values_list("status", flat=True)
        tenant.status = stored.get(pk=tenant.pk)
        if tenant.status == status:
            return False
        tenant.status = status
        tenant.status_changed_at = timezone.now()
        tenant.save(update_fields=["status", "status_changed_at"])
        return True


def tenant_pause(*, tenant: Tenant, note: str = "") -> bool:
    """Stop the tenant's scheduled work, keeping its settings. Returns False if already paused.

    The note, if any, goes into the audit trail with the pause.
    """
    with audit_noted(note):
        return _status_set(tenant=tenant, status=Tenant.Status.PAUSED)


def tenant_resume(*, tenant: Tenant, note: str = "") -> bool:
    """Start the tenant's scheduled work again. Returns False if already active."""
    with audit_noted(note):
        return _status_set(tenant=tenant, status=Tenant.Status.ACTIVE)


def tenant_sync_run_now(*, tenant: Tenant) -> str:
    """Queue the tenant's sync job once, now, through its own periodic task and header.

    Returns the Celery task id. Raises ValidationError when the tenant is paused
    or its sync task is missing (reconcile schedules puts it back).
    """
    if not tenant.is_active:
        raise ValidationError(f"{tenant.name} is paused; resume it before running a sync.")
    name = tenant_task_name(tenant=tenant, kind=TenantTask.Kind.SYNC)
    task = PeriodicTask.objects.filter(name=name).first()
    if task is None:
        raise ValidationError(f"{name} does not exist; reconcile schedules to restore it.")
    before = periodic_task_snapshots(task_ids=[task.pk])
    task_id = periodic_task_run_now(task=task)
    periodic_tasks_audit_run(before=before)
    return task_id


def tenant_settings_update(
    *,
    tenant: Tenant,
    source_kind: str,
    source_url: str,
    source_token: str | None,
    sync_interval: timedelta,
    timezone: ZoneInfo,
) -> list[str]:
    """Save the tenant's sync source, sync interval and time zone; return the fields changed.

    A source_token of None keeps the stored token and "" clears it. Every rule of
    the model is checked before anything is written (a ValidationError keyed by
    field), and `tenant` is changed only once its row is saved. The post_save
    signal then brings the sync task in line and records the change, token
    masked, in the audit trail.
    """
    values = {
        "source_kind": source_kind,
        "source_url": source_url,
        "sync_interval": sync_interval,
        "timezone": timezone.key,
    }
    if source_token is not None:
        values["source_token"] = source_token
    candidate = copy.copy(tenant)
    for name, value in values.items():
        setattr(candidate, name, value)
    others = [field.name for field in Tenant._meta.concrete_fields if field.name not in values]
    candidate.full_clean(exclude=others, validate_unique=False)
    changed = [name for name, value in values.items() if getattr(tenant, name) != value]
    if changed:
        with transaction.atomic():
            candidate.save(update_fields=changed)
        for name in changed:
            setattr(tenant, name, values[name])
    return changed


def tenant_delete(*, tenant: Tenant) -> None:
    """Delete the tenant, its domains and its schema with all its data."""
    with transaction.atomic():
        schema_name = tenant.schema_name
        tenant.delete()
        schema_drop(schema_name=schema_name)
