"""Who may read the operator APIs (/metrics, /api/status/...): a token or an operator.

A request is let in when it carries `Authorization: Bearer <OPS_API_TOKEN>` (for
Prometheus and scripts), or a signed-in, active staff user of the operator site
holding `permission`. Anything else gets a JSON 401 (no credentials, or a wrong
token) or 403 (signed in without the permission); neither says which token was
expected or whether one is configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

PERMISSION_DEFAULT = "django_celery_beat.view_periodictask"


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _token_valid(token: str) -> bool:
    expected = settings.OPS_API_TOKEN
    if not expected:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def operator_api(permission: str = PERMISSION_DEFAULT) -> Callable:
    """Decorate a view of the operator site that answers machines as well as operators."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            token = _bearer_token(request)
            if token is not None:
                if _token_valid(token):
                    return view(request, *args, **kwargs)
                return _refused(401, "The token is not valid.")
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return _refused(401, "Sign in as an operator or send a bearer token.")
            if not (user.is_active and user.is_staff and user.has_perm(permission)):
                return _refused(403, "This needs an operator with access to schedules.")
            return view(request, *args, **kwargs)

        return guarded

    return decorate


def _refused(status: int, message: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="operator-api"'
    return response
