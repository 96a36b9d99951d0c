"""The audit log page of a tenant's site."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_safe

from scheduling.audit.forms import AuditFilterForm
from scheduling.audit.selectors import tenant_audit_event_page
from tenants.accounts.decorators import tenant_admin_required


@tenant_admin_required
@require_safe
def audit_log(request):
    form = AuditFilterForm(request.GET)
    page = tenant_audit_event_page(
        tenant=request.tenant, action=form.action_or_none(), page=request.GET.get("page")
    )
    # htmx swaps just the table when the filter changes or a page link is followed.
    template = "audit/_log_table.html" if request.htmx else "audit/log.html"
    return render(request, template, {"form": form, "page": page})
