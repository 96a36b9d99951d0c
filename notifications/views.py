"""STUBS: being written."""

from django.http import Http404


def my_digest(request):
    raise Http404


digest_preview = my_digest
