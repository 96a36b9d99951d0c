"""A signed-out htmx request leaves the page instead of pasting the sign-in form into it."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect


class HtmxLoginRedirectMiddleware:
    """Turn a redirect to the sign-in page, answering an htmx request, into HX-Redirect.

    htmx follows a 302 itself and swaps whatever comes back into its target, so a
    session that expired while the dashboard polls would show the sign-in form inside
    the status card. HX-Redirect makes the browser load the sign-in page instead.
    Comes after HtmxMiddleware, which sets request.htmx.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not getattr(request, "htmx", False) or response.status_code not in (301, 302):
            return response
        location = response.get("Location", "")
        if urlsplit(location).path != resolve_url(settings.LOGIN_URL):
            return response
        # The page the person was on, not the fragment URL htmx asked for.
        current = request.htmx.current_url_abs_path or "/"
        return HttpResponseClientRedirect(
            f"{urlsplit(location).path}?{urlencode({'next': current})}"
        )
