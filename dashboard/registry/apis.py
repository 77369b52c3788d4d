"""API: models and their versions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import VIEWER
from dashboard.deployments.selectors import environment_list, environment_states
from dashboard.registry.names import validate_model_name
from dashboard.registry.selectors import model_exists, model_list, version_as_dict, version_page

router = Router(tags=["models"])


class EnvironmentSummary(Schema):
    name: str
    promoted_version: str | None
    live_version: str | None


class ModelOut(Schema):
    name: str
    environments: list[EnvironmentSummary]


class InputSignature(Schema):
    shape: list[int]
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
    created_at: dt.datetime | None
    created_by: str
    notes: str
    metrics: dict[str, float]
    environments: list[str]


class VersionPage(Schema):
    items: list[VersionOut]
    page: int
    page_size: int
    total: int
    pages: int


class PageParams(Schema):
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=200)


def model_or_404(model: str) -> str:
    """Validate the name (400) and check the model exists (404)."""
    validate_model_name(model)
    if not environment_list(model=model).exists() and not model_exists(model=model):
        raise Http404(f"no model named {model!r}")
    return model


@router.get("", response=list[ModelOut], summary="Models with their environments")
def models(request: HttpRequest) -> list[dict[str, Any]]:
    api_require_role(request, VIEWER)
    names = set(model_list())
    names.update(environment_list_all_models())
    result = []
    for name in sorted(names):
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


def environment_list_all_models() -> list[str]:
    from dashboard.deployments.models import Environment

    return list(Environment.objects.values_list("model_name", flat=True).distinct())


@router.get("/{model}/versions", response=VersionPage, summary="Versions of a model, newest first")
def versions(request: HttpRequest, model: str, params: Query[PageParams]) -> dict[str, Any]:
    api_require_role(request, VIEWER)
    model_or_404(model)
    page = version_page(model=model, page=params.page, page_size=params.page_size)
    serving: dict[str, list[str]] = {}
    for state in environment_states(list(environment_list(model=model)), with_live=False):
        if state.promoted_version:
            serving.setdefault(state.promoted_version, []).append(state.environment.name)
    return {
        "items": [version_as_dict(v, environments=serving.get(v.version, [])) for v in page.items],
        "page": page.page,
        "page_size": page.page_size,
        "total": page.total,
        "pages": page.pages,
    }
