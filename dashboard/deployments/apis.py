"""API: environments, promotions, rollbacks and deployments."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import DEPLOYER, VIEWER
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import (
    deployment_as_dict,
    deployment_get,
    environment_get,
    environment_list,
    environment_states,
)
from dashboard.deployments.services import deployment_rollback, deployment_start
from dashboard.registry.apis import model_or_404
from dashboard.registry.names import validate_environment_name

router = Router(tags=["deployments"])


class DeploymentEventOut(Schema):
    at: dt.datetime
    level: str
    message: str


class DeploymentOut(Schema):
    id: int
    model: str
    environment: str
    kind: str
    from_version: str | None
    to_version: str
    status: str
    operation_id: str | None
    requested_by: str | None
    reason: str
    live_version: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    events: list[DeploymentEventOut]


class EnvironmentOut(Schema):
    name: str
    promoted_version: str | None
    live_version: str | None
    live_error: str | None
    pointer: dict[str, Any] | None
    pointer_error: str | None
    service_arn: str
    requires_admin: bool
    deployment_in_flight: DeploymentOut | None


class PromoteIn(Schema):
    version: str = Field(..., min_length=1, max_length=200)
    reason: str = Field("", max_length=500)


class RollbackIn(Schema):
    reason: str = Field("", max_length=500)


def _environment_or_404(model: str, name: str) -> Environment:
    model_or_404(model)
    validate_environment_name(name)
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


@router.get("models/{model}/environments", response=list[EnvironmentOut])
def environments(request: HttpRequest, model: str) -> list[dict[str, Any]]:
    api_require_role(request, VIEWER)
    model_or_404(model)
    states = environment_states(list(environment_list(model=model)))
    return [
        {
            "name": s.environment.name,
            "promoted_version": s.promoted_version,
            "live_version": s.live.version if s.live else None,
            "live_error": (s.live.error or None) if s.live else None,
            "pointer": s.pointer,
            "pointer_error": s.pointer_error or None,
            "service_arn": s.environment.service_arn,
            "requires_admin": s.environment.requires_admin,
            "deployment_in_flight": deployment_as_dict(s.in_flight) if s.in_flight else None,
        }
        for s in states
    ]


@router.post(
    "models/{model}/environments/{environment}/promote",
    response={202: DeploymentOut},
    summary="Point an environment at a version and redeploy its service",
)
def promote(
    request: HttpRequest, model: str, environment: str, payload: PromoteIn
) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    env = _environment_or_404(model, environment)
    deployment = deployment_start(
        environment=env, version=payload.version, user=request.user, reason=payload.reason
    )
    return Status(202, deployment_as_dict(deployment))


@router.post(
    "models/{model}/environments/{environment}/rollback",
    response={202: DeploymentOut},
    summary="Redeploy the version served before the last successful deployment",
)
def rollback(
    request: HttpRequest, model: str, environment: str, payload: RollbackIn | None = None
) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    env = _environment_or_404(model, environment)
    reason = payload.reason if payload is not None else ""
    deployment = deployment_rollback(environment=env, user=request.user, reason=reason)
    return Status(202, deployment_as_dict(deployment))


@router.get("deployments/{deployment_id}", response=DeploymentOut)
def deployment(request: HttpRequest, deployment_id: int) -> dict[str, Any]:
    api_require_role(request, VIEWER)
    found = deployment_get(deployment_id=deployment_id)
    if found is None:
        raise Http404(f"no deployment #{deployment_id}")
    return deployment_as_dict(found)
