"""Tenants on the operator site: list, lifecycle actions and onboarding through the services."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.utils.html import format_html

from scheduling.intervals import (
    IntervalSyntaxError,
    describe_interval,
    format_interval,
    parse_interval,
)
from scheduling.models import SyncRun
from scheduling.platform.services import (
    schedules_reconcile,
)
from tenants.models import Domain, Tenant
from tenants.selectors import tenant_activity_by_schema
from tenants.services import (
    tenant_create,
    tenant_delete,
    tenant_pause,
    tenant_resume,
    tenant_sync_run_now,
)
from tenants.validators import SyncIntervalValidator, TenantSlugValidator, TimezoneValidator

RECONCILE_REPORT_LINES = 20


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


class TenantAdminForm(forms.ModelForm):
    """The source token is write-only: it is never rendered back, only replaced or cleared."""

    source_url = forms.URLField(required=False, max_length=500, assume_scheme="https")
    new_source_token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current token.",
    )
    clear_source_token = forms.BooleanField(required=False, label="Remove the token")

    class Meta:
        model = Tenant
        fields = ("name", "timezone", "sync_interval", "source_kind", "source_url", "status")

    def clean(self):
        data = super().clean()
        if data.get("new_source_token") and data.get("clear_source_token"):
            raise forms.ValidationError("Either set a new token or remove it, not both.")
        if data.get("clear_source_token"):
            self.instance.source_token = ""
        elif data.get("new_source_token"):
            self.instance.source_token = data["new_source_token"]
        return data


class TenantCreateForm(forms.Form):
    """Onboarding input; tenants.services.tenant_create does the checks that need the database."""

    # The service's error keys that are named differently here.
    SERVICE_FIELDS = {"schema_name": "slug"}

    name = forms.CharField(max_length=100)
    slug = forms.CharField(
        max_length=TenantSlugValidator.max_length,
        validators=[TenantSlugValidator()],
        help_text="The schema name and the first label of the host name, such as acme.",
    )
    timezone = forms.CharField(
        max_length=64, initial="UTC", validators=[TimezoneValidator()], label="Time zone"
    )
    sync_interval = forms.CharField(
        required=False,
        initial=format_interval(settings.TENANT_SYNC_INTERVAL_DEFAULT),
        help_text="Such as 90s, 15m or 1h30m.",
    )
    admin_email = forms.EmailField(label="Tenant admin's email")
    admin_password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        label="Tenant admin's password",
        help_text="Leave empty to generate one; it is shown once.",
    )

    def clean_timezone(self) -> ZoneInfo:
        return ZoneInfo(self.cleaned_data["timezone"])

    def clean_sync_interval(self) -> timedelta | None:
        text = self.cleaned_data["sync_interval"].strip()
        if not text:
            return None
        try:
            interval = parse_interval(text)
        except IntervalSyntaxError as exc:
            raise ValidationError(str(exc)) from None
        SyncIntervalValidator()(interval)
        return interval

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "slug": data["slug"],
            "timezone_name": data["timezone"].key,
            "sync_interval": data["sync_interval"],
            "admin_email": data["admin_email"],
            "admin_password": data["admin_password"] or None,
        }

    def add_service_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for key, errors in error.error_dict.items():
            field = self.SERVICE_FIELDS.get(key, key)
            self.add_error(field if field in self.fields else None, errors)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = (
        "name",
        "schema_name",
        "primary_domain",
        "status",
        "sync_every",
        "last_sync",
        "user_count",
    )
    list_filter = ("status", "source_kind")
    # 25 a page keeps the list's p95 under 50 ms at 10,000 tenants (bench_pages): the
    # admin spends about 0.3 ms rendering each row on top of a 20 ms page.
    list_per_page = 25
    # The paginator's count is enough; a second count of every tenant tells nothing more.
    show_full_result_count = False
    search_fields = ("name", "schema_name", "domains__domain")
    readonly_fields = ("schema_name", "public_id", "created_at", "status_changed_at", "token_state")
    inlines = [DomainInline]
    actions = ["pause_tenants", "resume_tenants", "run_sync_now", "reconcile_schedules"]

    def get_queryset(self, request):
        primary = Prefetch(
            "domains", queryset=Domain.objects.filter(is_primary=True), to_attr="primary_domains"
        )
        return super().get_queryset(request).prefetch_related(primary)

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        # Only the page's tenants, read from their schemas in a fixed number of queries.
        page = list(changelist.result_list)
        activity = tenant_activity_by_schema(schema_names=[t.schema_name for t in page])
        for tenant in page:
            tenant.activity = activity.get(tenant.schema_name)
        return changelist

    def action_checkbox(self, obj):
        # The same markup as Django's, without rendering a widget template for every row:
        # that was a third of the list's time with 10,000 tenants (see bench_pages).
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            f"Select this object for an action - {obj}",
        )

    @admin.display(description="primary domain")
    def primary_domain(self, tenant: Tenant) -> str:
        domains = getattr(tenant, "primary_domains", None)
        return domains[0].domain if domains else "-"

    @admin.display(description="sync", ordering="sync_interval")
    def sync_every(self, tenant: Tenant) -> str:
        return describe_interval(tenant.sync_interval)

    @admin.display(description="last sync")
    def last_sync(self, tenant: Tenant) -> str:
        activity = getattr(tenant, "activity", None)
        if activity is None:
            return "schema missing"
        if activity.last_sync_status is None:
            return "never"
        return SyncRun.Status(activity.last_sync_status).label

    @admin.display(description="users")
    def user_count(self, tenant: Tenant) -> int | str:
        activity = getattr(tenant, "activity", None)
        return "-" if activity is None else activity.user_count

    @admin.display(description="source token")
    def token_state(self, tenant: Tenant) -> str:
        return "set" if tenant.source_token else "not set"

    # --- Actions ----------------------------------------------------------------

    @admin.action(description="Pause the selected tenants")
    def pause_tenants(self, request, queryset):
        self._status_change(request, queryset, service=tenant_pause, done="paused")

    @admin.action(description="Resume the selected tenants")
    def resume_tenants(self, request, queryset):
        self._status_change(request, queryset, service=tenant_resume, done="resumed")

    def _status_change(self, request, queryset, *, service, done: str) -> None:
        changed = unchanged = 0
        for tenant in queryset:
            with transaction.atomic():  # the row, its schedules and the audit event together
                if service(tenant=tenant):
                    changed += 1
                else:
                    unchanged += 1
        self.message_user(request, f"{_tenants(changed)} {done}.", messages.SUCCESS)
        if unchanged:
            self.message_user(request, f"{_tenants(unchanged)} already {done}.", messages.INFO)

    @admin.action(description="Run the selected tenants' sync now")
    def run_sync_now(self, request, queryset):
        sent = 0
        for tenant in queryset.order_by("schema_name"):
            try:
                tenant_sync_run_now(tenant=tenant)
            except ValidationError as exc:
                self.message_user(request, f"Not sent: {exc.messages[0]}", messages.ERROR)
            else:
                sent += 1
        if sent:
            self.message_user(request, f"Sync sent for {_tenants(sent)}.", messages.SUCCESS)

    @admin.action(description="Reconcile every tenant's schedules")
    def reconcile_schedules(self, request, queryset):
        # Schedules are checked platform-wide, orphans included, whatever is selected.
        changes = schedules_reconcile()
        if not changes:
            self.message_user(request, "Schedules reconciled: nothing to repair.", messages.SUCCESS)
            return
        shown = changes[:RECONCILE_REPORT_LINES]
        more = len(changes) - len(shown)
        report = "; ".join(shown) + (f"; and {more} more" if more else "")
        failed = any(change.startswith("failed ") for change in changes)
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"Schedules reconciled: {report}.", level)

    # --- Deletion: the schema goes with the row ------------------------------------

    def delete_model(self, request, obj):
        tenant_delete(tenant=obj)

    def delete_queryset(self, request, queryset):
        for tenant in queryset:
            tenant_delete(tenant=tenant)

    # --- Onboarding ---------------------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        """Onboard through tenant_create: a tenant needs its schema, domain and admin at once."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TenantCreateForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                created = tenant_create(**form.service_kwargs())
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                return self._response_created(request, created)
        return self._render_create_form(request, form, form_url, extra_context)

    def _response_created(self, request, created):
        self.log_addition(request, created.tenant, [{"added": {}}])
        if created.generated_password:
            self.message_user(
                request,
                f"Generated password for {created.admin.email}, shown only this once: "
                f"{created.generated_password}",
                messages.WARNING,
            )
        return self.response_add(request, created.tenant)

    def _render_create_form(self, request, form, form_url, extra_context):
        admin_form = helpers.AdminForm(
            form, [(None, {"fields": list(form.fields)})], {}, model_admin=self
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Add {self.opts.verbose_name}",
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)


def _tenants(count: int) -> str:
    return f"{count} tenant{'' if count == 1 else 's'}"
