"""/api/status/schedules: `schedules_status --json` for machines, a page at a time.

GET ?tenant=<slug>&page=N&page_size=M (page_size 1 to OVERVIEW_PAGE_MAX,
default 100). Every bad parameter is a JSON 400 that says what is wrong.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.paginator import EmptyPage, Page, Paginator
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from scheduling.platform.ops_auth import operator_api
from scheduling.platform.schedules import (
    OVERVIEW_PAGE_MAX,
    OverviewJSONEncoder,
    schedules_overview_rows,
    schedules_overview_tasks,
)

PAGE_SIZE_DEFAULT = 100


class StatusQueryForm(forms.Form):
    tenant = forms.CharField(required=False, max_length=100)
    page = forms.IntegerField(required=False, min_value=1)
    page_size = forms.IntegerField(required=False, min_value=1, max_value=OVERVIEW_PAGE_MAX)


def _bad_request(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


def _page_url(request: HttpRequest, number: int) -> str:
    query = request.GET.copy()
    query["page"] = str(number)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def _envelope(request: HttpRequest, page: Page) -> dict:
    return {
        "count": page.paginator.count,
        "page": page.number,
        "page_size": page.paginator.per_page,
        "pages": page.paginator.num_pages,
        "next": _page_url(request, page.next_page_number()) if page.has_next() else None,
        "previous": (
            _page_url(request, page.previous_page_number()) if page.has_previous() else None
        ),
        "results": schedules_overview_rows(tasks=page.object_list),
    }


# A read-only GET answered to bearer tokens: a CSRF refusal would only hide the 405.
@csrf_exempt
@require_GET
@operator_api()
def schedules_status(request: HttpRequest) -> JsonResponse:
    form = StatusQueryForm(request.GET)
    if not form.is_valid():
        fields = form.errors.get_json_data()
        return _bad_request(
            "; ".join(f"{name}: {errors[0]['message']}" for name, errors in fields.items())
        )
    try:
        tasks = schedules_overview_tasks(tenant_slug=form.cleaned_data["tenant"] or None)
    except ValidationError as exc:
        return _bad_request(" ".join(exc.messages))
    paginator = Paginator(tasks, form.cleaned_data["page_size"] or PAGE_SIZE_DEFAULT)
    try:
        page = paginator.page(form.cleaned_data["page"] or 1)
    except EmptyPage:
        return _bad_request(f"page: there are only {paginator.num_pages} page(s).")
    return JsonResponse(_envelope(request, page), encoder=OverviewJSONEncoder)
