"""API: models and their versions."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import Field, StrictInt

from dashboard.accounts.apiauth import role_auth
from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import DEPLOYER, VIEWER
from dashboard.deployments.selectors import environment_list, environment_states, serving_map
from dashboard.registry.names import validate_model_name
from dashboard.registry.selectors import (
    InvalidCursor,
    model_exists,
    model_list,
    version_as_dict,
    version_page,
)
from dashboard.registry.uploads import (
    upload_cancel as cancel_upload,
)
from dashboard.registry.uploads import (
    upload_complete,
    upload_get,
    upload_resume,
    upload_start,
)

router = Router(tags=["models"])
# Times as the rest of the API writes them (DjangoJSONEncoder: "…T10:39:00Z").
_JSON = DjangoJSONEncoder()


class EnvironmentSummary(Schema):
    name: str
    promoted_version: str | None
    live_version: str | None


class ModelOut(Schema):
    name: str
    environments: list[EnvironmentSummary]


class InputSignature(Schema):
    # Strict: JSON true is not the number 1 (nor 4.0 a dimension).
    shape: list[StrictInt]
    dtype: str


class VersionOut(Schema):
    version: str
    artifact: str
    format: str
    size: int
    sha256: str | None
    input: InputSignature | None
    status: str
    status_detail: str
    validation: dict[str, Any] | None
    created_at: dt.datetime | None
    created_by: str
    notes: str
    metrics: dict[str, float]
    environments: list[str]


class VersionPage(Schema):
    items: list[VersionOut]
    page: int
    page_size: int
    total: int = Field(
        ..., description="matching versions; a search stops counting at 10000 (total_exact false)"
    )
    total_exact: bool
    pages: int
    next: str | None = Field(
        None, description="cursor of the next page (pass it as `cursor`); null on the last page"
    )


class VersionQuery(Schema):
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=200)
    status: Literal["uploading", "validating", "valid", "invalid"] | None = None
    environment: str | None = Field(None, max_length=32, description="only versions it serves")
    q: str | None = Field(
        None, max_length=100, description="text in version, notes, author, sha256"
    )
    sort: Literal["newest", "oldest", "version", "-version", "size", "-size"] = "newest"
    cursor: str | None = Field(
        None,
        max_length=400,
        description="`next` of the previous answer: the page after it, as fast at any depth "
        "(`page` is then only echoed back)",
    )


def model_or_404(model: str) -> str:
    """Validate the name (400) and check the model exists (404)."""
    validate_model_name(model)
    if not model_exists(model=model):
        raise Http404(f"no model named {model!r}")
    return model


@router.get("", response=list[ModelOut], summary="Models with their environments")
def models(request: HttpRequest) -> list[dict[str, Any]]:
    api_require_role(request, VIEWER)
    result = []
    for name in model_list():
        states = environment_states(list(environment_list(model=name)))
        result.append(
            {
                "name": name,
                "environments": [
                    {
                        "name": s.environment.name,
                        "promoted_version": s.promoted_version,
                        "live_version": s.live.version if s.live else None,
                    }
                    for s in states
                ],
            }
        )
    return result


@router.get("/{model}/versions", response=VersionPage, summary="Versions of a model, newest first")
def versions(request: HttpRequest, model: str, params: Query[VersionQuery]) -> HttpResponse:
    api_require_role(request, VIEWER)
    model_or_404(model)
    serving = serving_map(model=model)
    only: list[str] | None = None
    if params.environment is not None:
        only = [v for v, envs in serving.items() if params.environment in envs]
    try:
        page = version_page(
            model=model,
            page=params.page,
            page_size=params.page_size,
            status=params.status,
            versions=only,
            q=params.q,
            sort=params.sort,
            after=params.cursor,
        )
    except InvalidCursor as exc:
        raise HttpError(400, str(exc)) from exc
    body = {
        "items": [version_as_dict(v, environments=serving.get(v.version, [])) for v in page.items],
        "page": page.page,
        "page_size": page.page_size,
        "total": page.total,
        "total_exact": page.total_exact,
        "pages": page.pages,
        "next": page.next_cursor,
    }
    # Written out here rather than checked item by item against VersionPage
    # (still the documented answer): that check was half of a 100-row page's
    # time, for dicts built from the typed row a line above.
    return HttpResponse(
        orjson.dumps(body, default=_JSON.default, option=orjson.OPT_PASSTHROUGH_DATETIME),
        content_type="application/json; charset=utf-8",
    )


# --- Uploads -------------------------------------------------------------------


class UploadIn(Schema):
    version: str = Field(..., min_length=1, max_length=200)
    filename: str = Field(..., min_length=1, max_length=200)
    size: StrictInt = Field(..., description="bytes (an integer; true or 1.5 are refused)")
    sha256: str | None = Field(
        None, max_length=100, description="hex; may instead come at completion"
    )
    format: Literal["torchscript", "torch.export"] | None = None
    input: InputSignature
    notes: str = Field("", max_length=10_000)
    metrics: dict[str, float] = Field(default_factory=dict)


class PartUrl(Schema):
    part_number: int
    url: str


class PartDone(Schema):
    part_number: int
    etag: str
    size: int


class UploadOut(Schema):
    upload_id: str
    model: str
    version: str
    state: str
    size: int
    part_size: int
    part_count: int
    parts: list[PartUrl]
    parts_done: list[PartDone]
    expires_at: dt.datetime


class CompletedPart(Schema):
    part_number: StrictInt
    etag: str = Field(..., max_length=200)


class CompleteIn(Schema):
    parts: list[CompletedPart] = Field(..., max_length=10_000)
    sha256: str | None = Field(None, max_length=100)


def _plan_out(plan: Any) -> dict[str, Any]:
    upload = plan.upload
    return {
        "upload_id": upload.upload_id,
        "model": upload.model_name,
        "version": upload.version_name,
        "state": upload.state,
        "size": upload.size,
        "part_size": upload.part_size,
        "part_count": upload.part_count,
        "parts": plan.parts,
        "parts_done": [
            {"part_number": p.part_number, "etag": p.etag, "size": p.size} for p in plan.done
        ],
        "expires_at": plan.expires_at,
    }


@router.post(
    "/{model}/uploads",
    response={201: UploadOut},
    summary="Start an upload: presigned S3 multipart URLs, one per part",
    auth=role_auth(DEPLOYER),
)
def upload_create(request: HttpRequest, model: str, payload: UploadIn) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    plan = upload_start(
        model=model,
        version=payload.version,
        filename=payload.filename,
        size=payload.size,
        sha256=payload.sha256,
        format=payload.format,
        input_shape=payload.input.shape,
        input_dtype=payload.input.dtype,
        notes=payload.notes,
        metrics=payload.metrics,
        user=request.user,
    )
    return Status(201, _plan_out(plan))


@router.get(
    "/{model}/uploads/{upload_id}",
    response=UploadOut,
    summary="Resume: the parts S3 already has and fresh URLs for the rest",
)
def upload_status(request: HttpRequest, model: str, upload_id: str) -> dict[str, Any]:
    api_require_role(request, DEPLOYER)
    validate_model_name(model)
    upload = upload_get(model=model, upload_id=upload_id)
    return _plan_out(upload_resume(upload=upload, user=request.user))


@router.post(
    "/{model}/uploads/{upload_id}/complete",
    response={201: VersionOut},
    summary="Complete an upload: the new version, status validating",
    auth=role_auth(DEPLOYER),
)
def upload_finish(
    request: HttpRequest, model: str, upload_id: str, payload: CompleteIn
) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    validate_model_name(model)
    upload = upload_get(model=model, upload_id=upload_id)
    row = upload_complete(
        upload=upload,
        parts=[(p.part_number, p.etag) for p in payload.parts],
        sha256=payload.sha256,
        user=request.user,
    )
    return Status(201, version_as_dict(row, environments=[]))


@router.delete(
    "/{model}/uploads/{upload_id}",
    response={204: None},
    summary="Cancel an upload",
    auth=role_auth(DEPLOYER),
)
def upload_cancel(request: HttpRequest, model: str, upload_id: str) -> Status[None]:
    api_require_role(request, DEPLOYER)
    validate_model_name(model)
    cancel_upload(upload=upload_get(model=model, upload_id=upload_id), user=request.user)
    return Status(204, None)
