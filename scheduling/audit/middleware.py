"""Attribute the changes made while handling a request to the signed-in person."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from scheduling.audit.services import Actor, acting_as


class AuditActorMiddleware:
    """Runs each signed-in request inside `acting_as(<its user or operator>)`.

    Must come after AuthenticationMiddleware, and after the tenant routing
    middleware, which puts the connection on the request's schema: staff are
    operators only on the public site. Anonymous requests keep the default
    (system); a view acting for someone without a session, such as an
    unsubscribe link, says who with `acting_as` itself. The actor is reset when
    the response is returned, so it never carries over to the next request.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        with acting_as(Actor.for_user(user)):
            return self.get_response(request)
