"""The admin pages, open to the admin role (not only to Django "staff")."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dashboard.accounts.roles import ADMIN, user_has_role


class RoleAdminSite(admin.AdminSite):
    site_header = "ModelDeck administration"
    site_title = "ModelDeck admin"

    def has_permission(self, request: HttpRequest) -> bool:
        return user_has_role(request.user, ADMIN)


class RoleModelAdmin(admin.ModelAdmin):
    """Everything is allowed to the admin role and nothing to anyone else."""

    def _allowed(self, request: HttpRequest) -> bool:
        return user_has_role(request.user, ADMIN)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request)


site = RoleAdminSite(name="admin")
