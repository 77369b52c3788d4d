from typing import Any

from django import forms

from dashboard.accounts.admin_site import RoleModelAdmin, site
from dashboard.deployments.models import Deployment, Environment
from dashboard.deployments.validators import (
    validate_environment_name,
    validate_service_url,
    validate_ssm_parameter_name,
    validate_target_arn,
    validate_target_url,
)
from dashboard.registry.names import InvalidName, validate_model_name


class EnvironmentForm(forms.ModelForm):
    """Every field is checked by the rules it must follow (a name ends up in
    URLs and pages, the parameter in IAM policies, the URL is fetched by the
    dashboard), not only by the column's type."""

    service_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text=Environment._meta.get_field("service_url").help_text,
    )

    class Meta:
        model = Environment
        fields = (
            "model_name",
            "name",
            "ssm_parameter",
            "target",
            "service_arn",
            "service_url",
            "position",
        )
        # The rules (who may promote, approvals, freeze) are edited on the
        # environment's Rules page, where every change is audited.

    def clean_model_name(self) -> str:
        value = self.cleaned_data["model_name"]
        try:
            return validate_model_name(value)
        except InvalidName as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_name(self) -> str:
        return validate_environment_name(self.cleaned_data["name"])

    def clean_ssm_parameter(self) -> str:
        return validate_ssm_parameter_name(self.cleaned_data["ssm_parameter"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        arn = cleaned.get("service_arn")
        if arn is not None:
            try:
                cleaned["service_arn"] = validate_target_arn(
                    str(cleaned.get("target") or Environment.Target.APPRUNNER), arn
                )
            except forms.ValidationError as exc:
                self.add_error("service_arn", exc)
        if "service_url" in cleaned:
            try:
                validate_target_url(str(cleaned.get("target") or ""), cleaned["service_url"])
            except forms.ValidationError as exc:
                self.add_error("service_url", exc)
        return cleaned

    def clean_service_url(self) -> str:
        value = self.cleaned_data["service_url"]
        return validate_service_url(value) if value else value


class EnvironmentAdmin(RoleModelAdmin):
    form = EnvironmentForm
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

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


site.register(Environment, EnvironmentAdmin)
site.register(Deployment, DeploymentAdmin)
