from typing import Any

from django.http import HttpRequest

from dashboard.accounts.admin_site import RoleModelAdmin, site
from dashboard.registry.models import DeletedVersion


class DeletedVersionAdmin(RoleModelAdmin):
    """Read-only: a tombstone is written by version_delete and never lifted
    (a version name must always mean the same bytes)."""

    list_display = ("model_name", "version", "sha256", "deleted_at", "deleted_by")
    list_filter = ("model_name",)
    search_fields = ("model_name", "version", "sha256")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


site.register(DeletedVersion, DeletedVersionAdmin)
