from django.contrib import admin

from tenants.models import Domain, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "schema_name", "status", "timezone", "sync_interval", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "schema_name", "domains__domain")
    readonly_fields = ("schema_name", "public_id", "created_at", "status_changed_at")
    inlines = [DomainInline]

    def has_add_permission(self, request):
        # A tenant needs a schema, a domain and an admin: `manage.py tenant_create` does all three.
        return False
