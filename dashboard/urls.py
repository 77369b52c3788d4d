from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import path, register_converter
from django.views.generic import RedirectView

from dashboard.accounts import views as account_views
from dashboard.accounts.admin_site import site as admin_site
from dashboard.api import api
from dashboard.audit import views as audit_views
from dashboard.deployments import views as deployment_views
from dashboard.registry import views as registry_views
from dashboard.webhooks import views as webhook_views


class BoundedIntConverter:
    """Path ids that fit a 63-bit integer, so a huge number is a 404, not a
    database overflow."""

    regex = r"[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(BoundedIntConverter, "id")


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def favicon(request: HttpRequest) -> HttpResponse:
    # Resolved per request: the hashed name exists only after collectstatic.
    return HttpResponsePermanentRedirect(static("img/favicon.svg"))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="models", permanent=False)),
    path("healthz", healthz),
    # Browsers ask for it on every page (the admin's too); a 404 would be a
    # console error on each.
    path("favicon.ico", favicon),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("settings/", account_views.settings_page, name="settings"),
    path(
        "settings/tokens/<id:token_id>/revoke", account_views.token_revoke_view, name="token-revoke"
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("models/", registry_views.models_page, name="models"),
    path("models/<str:model>/", registry_views.model_page, name="model"),
    path("models/<str:model>/refresh", registry_views.refresh, name="refresh"),
    path("models/<str:model>/upload/", registry_views.upload_page, name="upload"),
    path("upload/", registry_views.upload_new_model_page, name="upload-new"),
    path(
        "models/<str:model>/versions/<str:version>/",
        registry_views.version_page_view,
        name="version",
    ),
    path(
        "models/<str:model>/versions/<str:version>/delete",
        registry_views.delete,
        name="version-delete",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/promote",
        deployment_views.promote,
        name="promote",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/rollback",
        deployment_views.rollback,
        name="rollback",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/",
        deployment_views.environment_page,
        name="environment",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/settings/",
        deployment_views.environment_settings,
        name="environment-settings",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/restore-pointer",
        deployment_views.restore_pointer,
        name="environment-restore-pointer",
    ),
    path("deployments/<id:deployment_id>/", deployment_views.deployment_page, name="deployment"),
    path(
        "deployments/<id:deployment_id>/approve",
        deployment_views.decide,
        {"decision": "approve"},
        name="deployment-approve",
    ),
    path(
        "deployments/<id:deployment_id>/reject",
        deployment_views.decide,
        {"decision": "reject"},
        name="deployment-reject",
    ),
    path(
        "deployments/<id:deployment_id>/abort",
        deployment_views.decide,
        {"decision": "abort"},
        name="deployment-abort",
    ),
    path("audit/", audit_views.audit_page, name="audit"),
    path(
        "models/<str:model>/environments/<str:environment>/webhooks/",
        webhook_views.webhooks_page,
        name="webhooks",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/webhooks/<id:webhook_id>/update",
        webhook_views.webhook_update_view,
        name="webhook-update",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/webhooks/<id:webhook_id>/rotate",
        webhook_views.webhook_rotate_view,
        name="webhook-rotate",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/webhooks/<id:webhook_id>/delete",
        webhook_views.webhook_delete_view,
        name="webhook-delete",
    ),
    path(
        "models/<str:model>/environments/<str:environment>/webhooks/<id:webhook_id>/test",
        webhook_views.webhook_test_view,
        name="webhook-test",
    ),
    path("admin/", admin_site.urls),
    path("api/", api.urls),
]
