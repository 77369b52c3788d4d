"""The HTTP API under /api/ (CONTRACT.md section 4), assembled from the apps'
routers. Auth: the browser session (with CSRF) or ``Authorization: Token <key>``."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from dashboard.accounts.apiauth import BrowserSessionAuth, TokenAuth
from dashboard.accounts.roles import ADMIN, VIEWER, user_has_role
from dashboard.audit.apis import router as audit_router
from dashboard.aws.errors import AwsError
from dashboard.deployments.apis import router as deployments_router
from dashboard.deployments.services import DeploymentError
from dashboard.monitoring.apis import router as monitoring_router
from dashboard.registry.apis import router as registry_router
from dashboard.registry.names import InvalidName
from dashboard.registry.uploads import UploadError


def docs_guard(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The API's docs and OpenAPI schema are for the dashboard's users only:
    a signed-in session or a valid token with at least the viewer role. A
    browser with no session is sent to sign in; anything else gets 401."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            token_user = TokenAuth()(request)
            if token_user is not None:
                request.user = token_user
        if not request.user.is_authenticated:
            if "text/html" in request.headers.get("Accept", ""):
                return redirect_to_login(request.get_full_path())
            return JsonResponse(
                {"detail": "authentication required: sign in or send 'Authorization: Token <key>'"},
                status=401,
            )
        if not user_has_role(request.user, VIEWER):
            return JsonResponse({"detail": f"this needs the {VIEWER} role"}, status=403)
        return view(request, *args, **kwargs)

    return guarded


api = NinjaAPI(
    title="ModelDeck API",
    version="1",
    description="Model versions and deployments. See README, section API.",
    auth=[TokenAuth(), BrowserSessionAuth()],
    openapi_url="/schema",
    docs_url="/docs",
    docs_decorator=docs_guard,
    urls_namespace="api",
)
api.add_router("/models", registry_router)
api.add_router("/", deployments_router)
# GET /api/deployments (the list); /api/deployments/<id> is the deployments router's.
api.add_router("/", audit_router)
api.add_router("/", monitoring_router)


def _error(request: HttpRequest, status: int, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if request.method in {"POST", "PUT", "PATCH"} and not _body_is_object(request):
        return _error(request, 400, "the request body must be a JSON object")
    problems = []
    for error in exc.errors:
        loc = [str(p) for p in error.get("loc", ())]
        where = ".".join(p for p in loc if p not in {"body", "payload", "params", "query"})
        if not where and loc[:1] == ["body"]:
            # The body as a whole: missing, not JSON, or not an object.
            problems.append("the request body must be a JSON object")
            continue
        problems.append(
            f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "")
        )
    detail = "; ".join(dict.fromkeys(problems)) or "invalid request"
    return _error(request, 400, detail, errors=_jsonable(exc.errors))


def _body_is_object(request: HttpRequest) -> bool:
    try:
        return isinstance(json.loads(request.body or b"{}"), dict)
    except ValueError:
        return False


def _jsonable(errors: Any) -> Any:
    # pydantic puts exception objects in "ctx"; keep the response JSON.
    return [{k: v for k, v in e.items() if k in {"loc", "msg", "type"}} for e in errors]


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, "authentication required: sign in or send 'Authorization: Token <key>'"
    )


@api.exception_handler(InvalidName)
def _invalid_name(request: HttpRequest, exc: InvalidName) -> HttpResponse:
    return _error(request, 400, str(exc))


@api.exception_handler(DeploymentError)
def _deployment_error(request: HttpRequest, exc: DeploymentError) -> HttpResponse:
    return _error(request, exc.status, str(exc))


@api.exception_handler(UploadError)
def _upload_error(request: HttpRequest, exc: UploadError) -> HttpResponse:
    return _error(request, exc.status, str(exc))


@api.exception_handler(AwsError)
def _aws_error(request: HttpRequest, exc: AwsError) -> HttpResponse:
    # str(exc) names the operation, AWS's error code and an error id; AWS's
    # own message (ARNs, role names) is in the log under that id, and shown
    # to admins only.
    extra: dict[str, Any] = {"error_id": exc.error_id or None}
    if user_has_role(request.user, ADMIN):
        extra["aws_detail"] = exc.detail
    return _error(
        request,
        503 if exc.transient else 502,
        f"AWS call failed: {exc}. Give the error id to an admin if it persists.",
        **extra,
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, str(exc) or "not found")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, str(exc))
