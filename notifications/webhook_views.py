"""The tenant admins' Webhook page: the URL, its signing secret, a test POST and the
latest deliveries.

Everything acts on request.tenant; nothing in a request names a tenant or a delivery.
The secret is shown in full once, on the page after it is created or rotated.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from notifications.forms import WebhookForm
from notifications.selectors import webhook_deliveries_recent
from notifications.webhooks import (
    webhook_secret_masked,
    webhook_secret_rotate,
    webhook_settings_update,
    webhook_test_send,
)
from tenants.accounts.decorators import tenant_admin_required

# The new secret, kept in the session only until the next page shows it.
SECRET_ONCE = "webhook_secret_once"


@never_cache  # the page may show a secret
@tenant_admin_required
@require_http_methods(["GET", "POST"])
def webhook_settings(request: HttpRequest) -> HttpResponse:
    tenant = request.tenant
    data = request.POST if request.method == "POST" else None
    form = WebhookForm(data, initial={"webhook_url": tenant.webhook_url})
    if form.is_valid():
        try:
            changed = webhook_settings_update(tenant=tenant, url=form.cleaned_data["webhook_url"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if "webhook_secret" in changed:
                request.session[SECRET_ONCE] = tenant.webhook_secret
            messages.success(request, "Saved." if tenant.webhook_url else "Saved. Webhook off.")
            return redirect("webhook")
    context = {
        "tenant": tenant,
        "form": form,
        "secret_once": request.session.pop(SECRET_ONCE, None),
        "secret_masked": webhook_secret_masked(tenant.webhook_secret),
        "deliveries": webhook_deliveries_recent(),
    }
    return render(request, "notifications/webhook.html", context)


@tenant_admin_required
@require_GET
def webhook_deliveries(request: HttpRequest) -> HttpResponse:
    """The deliveries table (and any failing notice), which the page refreshes with htmx."""
    context = {"tenant": request.tenant, "deliveries": webhook_deliveries_recent()}
    return render(request, "notifications/_webhook_deliveries.html", context)


@tenant_admin_required
@require_POST
def webhook_secret_rotate_view(request: HttpRequest) -> HttpResponse:
    request.session[SECRET_ONCE] = webhook_secret_rotate(tenant=request.tenant)
    messages.success(
        request, "New secret created. Give it to your receivers: the old one no longer verifies."
    )
    return redirect("webhook")


@tenant_admin_required
@require_POST
def webhook_test(request: HttpRequest) -> HttpResponse:
    try:
        webhook_test_send(tenant=request.tenant)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Test delivery queued. It appears below in a moment.")
    return redirect("webhook")
