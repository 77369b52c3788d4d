"""Pages: the model list, a model's page (environments + versions), a version's page."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from csp.decorators import csp_update
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import DEPLOYER, VIEWER
from dashboard.aws import s3
from dashboard.aws.errors import AwsError
from dashboard.deployments.models import Deployment
from dashboard.deployments.selectors import (
    deployment_list,
    environment_list,
    environment_states,
    serving_map,
)
from dashboard.registry.manifest import DTYPES, FORMATS
from dashboard.registry.models import ModelVersion
from dashboard.registry.names import InvalidName, validate_model_name
from dashboard.registry.selectors import (
    SORTS,
    InvalidCursor,
    model_exists,
    model_list,
    version_get,
    version_page,
)
from dashboard.registry.services import VersionDeleteRefused, registry_sync, version_delete

logger = logging.getLogger(__name__)

PAGE_SIZE = 50


@role_required(VIEWER)
def models_page(request: HttpRequest) -> HttpResponse:
    rows = [
        {"name": name, "environments": environment_states(list(environment_list(model=name)))}
        for name in model_list()
    ]
    return render(request, "registry/models.html", {"rows": rows})


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 1_000_000))
    except ValueError:
        return 1


def _model_or_404(model: str) -> str:
    try:
        validate_model_name(model)
    except InvalidName as exc:
        raise Http404(str(exc)) from exc
    if not model_exists(model=model):
        raise Http404(f"no model named {model!r}")
    return model


def _aws_problem(request: HttpRequest, what: str, exc: AwsError) -> HttpResponse:
    return render(
        request,
        "problem.html",
        {
            "title": "AWS is not answering",
            "message": f"Could not read {what}: {exc}",
            "error": exc,
        },
        status=503 if exc.transient else 502,
    )


@role_required(VIEWER)
def model_page(request: HttpRequest, model: str) -> HttpResponse:
    _model_or_404(model)
    try:
        return _model_page(request, model)
    except AwsError as exc:
        return _aws_problem(request, model, exc)


def _model_page(request: HttpRequest, model: str) -> HttpResponse:
    serving = serving_map(model=model)
    status = request.GET.get("status") or None
    if status not in {None, *ModelVersion.Status.values}:
        status = None
    environment = request.GET.get("environment") or None
    sort = request.GET.get("sort") if request.GET.get("sort") in SORTS else "newest"
    q = (request.GET.get("q") or "").strip()[:100] or None
    only = None
    if environment:
        only = [v for v, envs in serving.items() if environment in envs]
    requested = _page_number(request.GET.get("page"))
    # The pager's links carry a cursor (keyset pages: as fast at page 2000
    # as at page 2); a bare ?page=N still works, by offset.
    after = (request.GET.get("after") or "")[:400] or None
    before = (request.GET.get("before") or "")[:400] or None
    arguments: dict[str, Any] = {
        "model": model,
        "page": requested,
        "page_size": PAGE_SIZE,
        "status": status,
        "versions": only,
        "q": q,
        "sort": sort or "newest",
    }
    try:
        page = version_page(**arguments, after=after, before=before)
    except InvalidCursor:
        page = version_page(**{**arguments, "page": 1})
    filters = {
        k: v
        for k, v in {"status": status, "environment": environment, "q": q, "sort": sort}.items()
        if v
    }
    environments = list(environment_list(model=model))
    context = {
        "model": model,
        "page": page,
        "versions": [(v, serving.get(v.version, [])) for v in page.items],
        "filters": filters,
        "filter_query": urlencode(filters),
        "newer_query": _pager_query(filters, page.page - 1, before=page.previous_cursor),
        "older_query": _pager_query(filters, page.page + 1, after=page.next_cursor),
        "statuses": ModelVersion.Status.values,
        "sorts": list(SORTS),
        "environment_names": [e.name for e in environments],
    }
    if request.headers.get("HX-Request") and request.GET.get("fragment") == "versions":
        return render(request, "registry/_versions.html", context)
    states = environment_states(environments)
    context.update(
        {
            "states": states,
            "any_in_flight": any(s.in_flight for s in states),
            # The newest valid versions: an index range scan of 200 rows.
            "promotable": list(
                ModelVersion.objects.filter(model_name=model, status=ModelVersion.Status.VALID)
                .order_by("-created_at", "-id")
                .values_list("version", flat=True)[:200]
            ),
            "deployments": deployment_list(model=model, limit=10),
        }
    )
    if request.headers.get("HX-Request") and request.GET.get("fragment") == "environments":
        return render(request, "registry/_environments.html", context)
    return render(request, "registry/model.html", context)


def _pager_query(
    filters: dict[str, str], page: int, *, after: str | None = None, before: str | None = None
) -> str:
    """The query string of a pager link: the filters, the page number shown,
    and the cursor it starts from (page 1 needs none)."""
    query: dict[str, str | int] = {**filters, "page": page}
    if page > 1 and after:
        query["after"] = after
    elif page > 1 and before:
        query["before"] = before
    return urlencode(query)


@role_required(VIEWER)
def version_page_view(request: HttpRequest, model: str, version: str) -> HttpResponse:
    _model_or_404(model)
    row = version_get(model=model, version=version)
    if row is None:
        raise Http404(f"{model} has no version {version!r}")
    context = {
        "model": model,
        "v": row,
        "serving": serving_map(model=model).get(row.version, []),
        "deployments": Deployment.objects.filter(environment__model_name=model)
        .filter(to_version=row.version)
        .select_related("environment", "requested_by")[:50],
    }
    if request.headers.get("HX-Request"):
        # The status badge polls while validation runs.
        status = 200 if row.status in {"uploading", "validating"} else 286
        return render(request, "registry/_version_status.html", context, status=status)
    return render(request, "registry/version.html", context)


@require_POST
@role_required(DEPLOYER)
def refresh(request: HttpRequest, model: str) -> HttpResponse:
    try:
        validate_model_name(model)
    except InvalidName as exc:
        raise Http404(str(exc)) from exc
    try:
        report = registry_sync(model=model)
    except AwsError as exc:
        messages.error(request, f"Could not read S3: {exc}")
    else:
        messages.success(
            request,
            f"Synced from S3: {report.created} new, {report.updated} changed, "
            f"{report.deleted} removed, {report.unchanged} unchanged."
            + (
                f" A worker is reading the manifests of {report.pending}." if report.pending else ""
            ),
        )
    return redirect("model", model=model)


@require_POST
@role_required(DEPLOYER)
def delete(request: HttpRequest, model: str, version: str) -> HttpResponse:
    _model_or_404(model)
    row = version_get(model=model, version=version)
    if row is None:
        raise Http404(f"{model} has no version {version!r}")
    if request.POST.get("confirm") != version:
        messages.error(request, f"Type the version name ({version}) to confirm the deletion.")
        return redirect("version", model=model, version=version)
    try:
        version_delete(version=row, user=request.user)
    except VersionDeleteRefused as exc:
        messages.error(request, str(exc))
        return redirect("version", model=model, version=version)
    except AwsError as exc:
        messages.error(request, f"Could not delete from S3: {exc}")
        return redirect("version", model=model, version=version)
    messages.success(request, f"Deleted {model} {version} (S3 versioning keeps the bytes).")
    return redirect("model", model=model)


@role_required(DEPLOYER)
def upload_page(request: HttpRequest, model: str) -> HttpResponse:
    """The browser upload: the file goes straight to S3 (static/js/upload.js)."""
    try:
        validate_model_name(model)
    except InvalidName as exc:
        raise Http404(str(exc)) from exc
    response = render(
        request,
        "registry/upload.html",
        {
            "model": model,
            "formats": FORMATS,
            "dtypes": DTYPES,
            "max_bytes": settings.UPLOAD_MAX_BYTES,
        },
    )
    return upload_csp(request, response)


def upload_csp(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Widen this page's Content-Security-Policy by exactly what the upload
    needs: PUTs to the bucket's own origin, and WebAssembly for the SHA-256
    (hash-wasm compiles its module; 'wasm-unsafe-eval' allows that and no
    JavaScript eval)."""
    try:
        origin = s3.upload_origin(bucket=settings.MODELS_BUCKET)
    except AwsError:
        logger.warning("cannot tell the bucket's origin; uploads will be refused", exc_info=True)
        origin = None
    extra = {"script-src": ["'wasm-unsafe-eval'"]}
    if origin:
        extra["connect-src"] = [origin]
    widened = csp_update(extra)(lambda _request: response)(request)
    assert isinstance(widened, HttpResponse)
    return widened


@role_required(DEPLOYER)
def upload_new_model_page(request: HttpRequest) -> HttpResponse:
    """Upload the first version of a model that does not exist yet."""
    model = (request.GET.get("model") or "").strip()
    if model:
        try:
            validate_model_name(model)
        except InvalidName as exc:
            messages.error(request, str(exc))
        else:
            return redirect("upload", model=model)
    return render(request, "registry/upload_new.html", {})
