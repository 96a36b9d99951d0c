"""The page behind the unsubscribe link in every digest; no sign-in needed.

GET only asks (mail scanners fetch links, and must change nothing); the page's
own script then posts the form, so a person who follows the link is done at
once. POST turns the digest off: it is also the RFC 8058 one-click POST that
mail clients send with the body `List-Unsubscribe=One-Click`. The signed token
in the address is the credential, so the POST needs no CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notifications.unsubscribe import (
    UnsubscribeLinkInvalid,
    digest_unsubscribe,
    unsubscribe_user_get,
)


def _unlisted(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Keep search engines from listing the page: its address is a credential."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["X-Robots-Tag"] = "noindex, nofollow"
        return response

    return wrapped


@csrf_exempt
@never_cache
@_unlisted
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = unsubscribe_user_get(token=token)
    except UnsubscribeLinkInvalid as exc:
        context = {"reason": exc.message}
        return render(request, "notifications/unsubscribe_invalid.html", context, status=400)
    if request.method == "POST":
        digest_unsubscribe(user=user)
        return render(request, "notifications/unsubscribed.html", {"subscriber": user})
    return render(request, "notifications/unsubscribe.html", {"subscriber": user})
