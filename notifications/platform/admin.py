"""The operators' search of every tenant's deliveries, read from the public DeliveryLog.

Read-only: the rows are copies that notifications.delivery keeps in step with each
tenant's own delivery, so nothing here may add, change or delete one.
"""

from __future__ import annotations

import uuid
from datetime import UTC

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q
from django.db.models.functions import Collate, Upper
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from notifications.models import Channel, DeliveryStatus
from notifications.platform.models import DeliveryLog
from scheduling.readonly_admin import ReadOnlyAdminMixin
from tenants.models import Tenant

# The topics notifications.delivery writes; fixed, so the filter never reads them
# with a SELECT DISTINCT over millions of rows.
TOPICS = [("digest", "digest"), ("sync run", "sync run"), ("test", "test")]
# A search names a handful of tenants; more than this is a too-short prefix.
SEARCH_TENANTS_MAX = 50
LAST_ERROR_CHARS = 80
# The expression of the deliverylog_recipient index; a search must use it unchanged.
RECIPIENT_KEY = Collate(Upper("recipient"), "C")


class AtLeast(int):
    """A count that stopped at the cap: it pages like the number and reads "N+"."""

    def __str__(self) -> str:
        return f"{int(self)}+"


class CappedCountPaginator(Paginator):
    """Counts at most `cap` rows. An exact count of millions of deliveries reads all of
    them on every page; past `cap` rows (200 pages) a search or a filter is the way on."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        counted = self.object_list[: self.cap + 1].count()
        return AtLeast(self.cap) if counted > self.cap else counted


class ChoiceFilter(admin.SimpleListFilter):
    """A fixed list of values; any other value lists nothing (a NUL byte never reaches SQL)."""

    values: list[tuple[str, str]]  # not `choices`: a SimpleListFilter method

    def lookups(self, request, model_admin):
        return self.values

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value not in dict(self.values):
            return queryset.none()
        return queryset.filter(**{self.parameter_name: value})


class ChannelFilter(ChoiceFilter):
    title = parameter_name = "channel"
    values = Channel.choices


class StatusFilter(ChoiceFilter):
    title = parameter_name = "status"
    values = DeliveryStatus.choices


class TopicFilter(ChoiceFilter):
    title = parameter_name = "topic"
    values = TOPICS


class TenantFilter(admin.SimpleListFilter):
    """One tenant's deliveries (`?tenant=<public_id>`, linked from its change page).

    It lists only the chosen tenant, never every tenant: there may be thousands.
    """

    title = "tenant"
    parameter_name = "tenant"
    tenant: Tenant | None = None

    def lookups(self, request, model_admin):
        value = self.value()
        if value is None:
            return []
        self.tenant = _tenant_by_public_id(value)
        return [(value, self.tenant.name if self.tenant else "no such tenant")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.tenant is None:
            return queryset.none()
        return queryset.filter(tenant=self.tenant)


def _tenant_by_public_id(value: str) -> Tenant | None:
    public_id = _uuid(value)
    return None if public_id is None else Tenant.objects.filter(public_id=public_id).first()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@admin.register(DeliveryLog)
class DeliveryLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created",
        "tenant_link",
        "channel",
        "topic",
        "recipient",
        "status",
        "attempts",
        "response",
        "last_error_short",
    )
    list_filter = (ChannelFilter, StatusFilter, TopicFilter, TenantFilter)
    list_select_related = ("tenant",)
    # Only the date: any other column would sort millions of rows for one page.
    sortable_by = ("created",)
    ordering = ("-created_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    paginator = CappedCountPaginator
    actions = None
    # Shown in the search box's help; get_search_results does the searching.
    search_fields = ("recipient",)
    search_help_text = (
        "An email address or webhook URL, whole or its beginning, in any letter case; "
        "a tenant's slug, or its name's beginning; a delivery id; or a provider message id."
    )

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # Only the filters' own parameters: a hand-made ?recipient=... is refused (400),
        # as it could read the whole table or pass a NUL byte on to PostgreSQL.
        return lookup in {spec.parameter_name for spec in self.list_filter}

    def get_search_results(self, request, queryset, search_term):
        """The whole term, matched in ways an index answers at millions of rows.

        Django's default (`icontains` on each field, and per word) is a LIKE '%term%'
        that no btree can serve, so every search would read the whole table; and a
        join to tenants in the same OR stops PostgreSQL from combining indexes. Here
        each arm has its own index, and PostgreSQL ORs them (a BitmapOr):
        - recipient: UPPER(recipient) COLLATE "C" LIKE 'TERM%', the expression of
          deliverylog_recipient (in "C" a btree serves a prefix), so a whole address
          also matches;
        - provider_message_id: equal, with or without <>, on deliverylog_provider_id;
        - delivery_public_id: equal, when the term is a UUID (its unique index);
        - tenant: the ids of the tenants whose slug is the term or whose name starts
          with it, read first from the small tenants table, on deliverylog_tenant_created.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        queryset = queryset.alias(recipient_key=RECIPIENT_KEY)
        return queryset.filter(_search(term)), False

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, log: DeliveryLog) -> str:
        return f"{log.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="tenant")
    def tenant_link(self, log: DeliveryLog) -> str:
        url = reverse("admin:tenants_tenant_change", args=[log.tenant_id])
        return format_html('<a href="{}">{}</a>', url, log.tenant.name)

    @admin.display(description="response code", empty_value="-")
    def response(self, log: DeliveryLog) -> int | None:
        return log.response_code

    @admin.display(description="last error")
    def last_error_short(self, log: DeliveryLog) -> str:
        if not log.last_error:
            return "-"
        return format_html(
            '<span title="{}">{}</span>',
            log.last_error,
            truncatechars(log.last_error, LAST_ERROR_CHARS),
        )


def _search(term: str) -> Q:
    bare = term.strip("<>")
    message_ids = {term, bare, f"<{bare}>"} if bare else {term}
    query = Q(recipient_key__startswith=term.upper()) | Q(
        provider_message_id__in=sorted(message_ids)
    )
    if (public_id := _uuid(term)) is not None:
        query |= Q(delivery_public_id=public_id)
    tenant_ids = list(
        Tenant.objects.filter(Q(schema_name=term.lower()) | Q(name__istartswith=term))
        .order_by("schema_name")
        .values_list("pk", flat=True)[:SEARCH_TENANTS_MAX]
    )
    if tenant_ids:
        query |= Q(tenant_id__in=tenant_ids)
    return query
