"""`migrate` for a multi-tenant database.

Runs django-tenants' migrate_schemas (public, then every tenant) and then keeps
the tenant template schema migrated, so that new tenants cloned from it are
current.
"""

from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

from tenants.provisioning import template_schema_ensure


class Command(MigrateSchemasCommand):
    def handle(self, *args, **options):
        super().handle(*args, **options)
        # A run limited to one schema (`--schema x`) leaves the template alone.
        if options.get("schema_name") or not self.sync_tenant:
            return
        template_schema_ensure(verbosity=max(int(options.get("verbosity", 1)) - 1, 0))
