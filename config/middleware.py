"""Request guards that apply to every site."""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation

from scheduling.platform.health import health_response


class NulCharacterInRequest(SuspiciousOperation):
    """PostgreSQL text cannot hold U+0000; a value carrying one would fail in the database."""


class NulCharacterGuardMiddleware:
    """Answer 400 to a query string or form body with a NUL character in a name or value.

    Django's form fields refuse NUL themselves, but the admin's list filters and
    any hand-made lookup pass query values straight to a query, where psycopg
    refuses them with an error that would be a 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Form bodies only: Django leaves request.POST empty, unread, for other content
        # types, and the CSRF check parses a form body at once anyway.
        sources = [request.GET, request.POST] if request.method == "POST" else [request.GET]
        for data in sources:
            for key, values in data.lists():
                if "\x00" in key or any("\x00" in value for value in values):
                    raise NulCharacterInRequest("A NUL character in the request's parameters.")
        return self.get_response(request)


class HealthCheckMiddleware:
    """Answer /healthz, /healthz/beat and /healthz/worker before host routing, so a probe
    needs no tenant or operator host name (see scheduling.platform.health)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return health_response(request) or self.get_response(request)
