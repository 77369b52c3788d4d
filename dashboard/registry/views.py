"""Pages: the model list, a model's page (environments + versions), a version's page."""

from __future__ import annotations

import logging
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
from dashboard.registry.selectors import SORTS, model_exists, model_list, version_get, version_page
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
    page = version_page(
        model=model,
        page=requested,
        page_size=PAGE_SIZE,
        status=status,
        versions=only,
        q=q,
        sort=sort or "newest",
    )
    filters = {
        k: v
        for k, v in {"status": status, "environment": environment, "q": q, "sort": sort}.items()
        if v
    }
    context = {
        "model": model,
        "page": page,
        "versions": [(v, serving.get(v.version, [])) for v in page.items],
        "filters": filters,
        "filter_query": urlencode(filters),
        "statuses": ModelVersion.Status.values,
        "sorts": list(SORTS),
        "environment_names": [e.name for e in environment_list(model=model)],
    }
    if request.headers.get("HX-Request") and request.GET.get("fragment") == "versions":
        return render(request, "registry/_versions.html", context)
    environments = list(environment_list(model=model))
    states = environment_states(environments)
    context.update(
        {
            "states": states,
            "any_in_flight": any(s.in_flight for s in states),
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
            f"{report.deleted} removed, {report.unchanged} unchanged.",
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
