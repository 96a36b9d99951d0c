"""The operator admin's read-only pages: records of what happened, never edited by hand."""

from __future__ import annotations


class ReadOnlyAdminMixin:
    """No add, change or delete in the admin; the change page shows the row read-only."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
