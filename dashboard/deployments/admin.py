from dashboard.accounts.admin_site import RoleModelAdmin, site
from dashboard.deployments.models import Deployment, Environment


class EnvironmentAdmin(RoleModelAdmin):
    list_display = ("model_name", "name", "target", "ssm_parameter", "service_arn", "promote_role")
    list_filter = ("model_name", "target", "promote_role", "requires_approval", "frozen")
    readonly_fields = ("promoted_version", "pointer_version_seen")


class DeploymentAdmin(RoleModelAdmin):
    """Read-only: deployments are changed by the deployment services only."""

    list_display = (
        "id",
        "environment",
        "kind",
        "to_version",
        "status",
        "step",
        "requested_by_name",
        "created_at",
    )
    list_filter = ("status", "kind")

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


site.register(Environment, EnvironmentAdmin)
site.register(Deployment, DeploymentAdmin)
