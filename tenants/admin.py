from django import forms
from django.contrib import admin

from tenants.models import Domain, Tenant


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


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = ("name", "schema_name", "status", "timezone", "sync_interval", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "schema_name", "domains__domain")
    readonly_fields = ("schema_name", "public_id", "created_at", "status_changed_at", "token_state")
    inlines = [DomainInline]

    @admin.display(description="source token")
    def token_state(self, tenant: Tenant) -> str:
        return "set" if tenant.source_token else "not set"

    def has_add_permission(self, request):
        # A tenant needs a schema, a domain and an admin: `manage.py tenant_create` does all three.
        return False
