from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def tenant_admin_required(view):
    """Logged-in tenant admins only: anonymous users go to login, members get 403."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not request.user.is_tenant_admin:
            raise PermissionDenied("Only tenant admins can do this.")
        return view(request, *args, **kwargs)

    return wrapper
