"""Sync pages of a tenant's site. STUBS: being written."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404
from django.shortcuts import render


@login_required
def dashboard(request):
    return render(request, "tenant/home.html", {"tenant": connection.tenant})


def run_history(request):
    raise Http404


sync_settings = sync_pause = sync_resume = sync_run_now = run_history
