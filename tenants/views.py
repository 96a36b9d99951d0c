"""Pages of a tenant's own site."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.shortcuts import render

from tenants.accounts.decorators import tenant_admin_required
from tenants.selectors import tenant_user_list


@login_required
def home(request):
    return render(request, "tenant/home.html", {"tenant": connection.tenant})


@tenant_admin_required
def user_list(request):
    return render(request, "tenant/users.html", {"users": tenant_user_list()})
