from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from dashboard.accounts.admin_site import RoleModelAdmin, site
from dashboard.accounts.models import ApiToken


class RoleUserAdmin(RoleModelAdmin, UserAdmin):
    pass


class RoleGroupAdmin(RoleModelAdmin, GroupAdmin):
    pass


class ApiTokenAdmin(RoleModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # keys are created on the settings page or by create_api_token


site.register(User, RoleUserAdmin)
site.register(Group, RoleGroupAdmin)
site.register(ApiToken, ApiTokenAdmin)


# django-axes' sign-in records, on our role-checked site: an admin unlocks an
# address or a username by deleting its access attempts.
class RoleAccessAttemptAdmin(RoleModelAdmin, AccessAttemptAdmin):
    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False


class RoleAccessLogAdmin(RoleModelAdmin, AccessLogAdmin):
    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False


class RoleAccessFailureLogAdmin(RoleModelAdmin, AccessFailureLogAdmin):
    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False


site.register(AccessAttempt, RoleAccessAttemptAdmin)
site.register(AccessLog, RoleAccessLogAdmin)
site.register(AccessFailureLog, RoleAccessFailureLogAdmin)
