"""API: environments, promotions, approvals, rollbacks, pointer history and
deployments (CONTRACT.md section 4)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from dashboard.accounts.apiauth import role_auth
from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import DEPLOYER, VIEWER
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import (
    EnvironmentState,
    deployment_as_dict,
    deployment_get,
    environment_get,
    environment_history,
    environment_list,
    environment_states,
)
from dashboard.deployments.services import (
    deployment_abort,
    deployment_approve,
    deployment_reject,
    deployment_rollback,
    deployment_start,
)
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
    kind: str = Field(description="promote, rollback or auto_rollback")
    from_version: str | None
    to_version: str
    from_sha256: str | None
    to_sha256: str | None
    status: str = Field(
        description="awaiting_approval, pending, in_progress, verifying, baking (in flight); "
        "succeeded, failed, rolled_back, rejected, expired (final)"
    )
    operation_id: str | None
    operation_status: str | None
    parameter_version: int | None = Field(description="SSM parameter version it deploys")
    requested_by: str | None
    approved_by: str | None
    decision_reason: str | None
    reason: str
    live_version: str | None
    live_sha256: str | None
    undoes: int | None = Field(description="for a rollback: the deployment it undoes")
    created_at: dt.datetime
    started_at: dt.datetime | None
    live_at: dt.datetime | None
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    error: str | None
    alert: str | None
    events: list[DeploymentEventOut]


class DriftOut(Schema):
    kind: str
    reason: str
    pointer_version: str | None
    live_version: str | None
    deployed_version: str | None
    pointer_sha256: str | None
    live_sha256: str | None
    deployed_sha256: str | None


class RollbackPreviewOut(Schema):
    from_version: str
    from_sha256: str
    to_version: str
    to_sha256: str
    to_s3_version_id: str


class EnvironmentOut(Schema):
    name: str
    promoted_version: str | None = Field(description="what the pointer (SSM) names")
    pointer: dict[str, Any] | None
    pointer_parameter_version: int | None
    pointer_error: str | None
    live_version: str | None = Field(description="what the service reports on /version")
    live_sha256: str | None
    live_error: str | None
    deployed_version: str | None = Field(description="the last successful deployment's")
    drift: DriftOut | None
    target: str
    service_arn: str
    promote_role: str
    requires_admin: bool
    requires_approval: bool
    requires_reason: bool
    frozen: bool
    freeze_reason: str
    alert: str | None
    rollback: RollbackPreviewOut | None
    deployment_in_flight: DeploymentOut | None


class PromoteIn(Schema):
    version: str = Field(..., min_length=1, max_length=200)
    reason: str = Field("", max_length=500)


class ReasonIn(Schema):
    reason: str = Field("", max_length=500)


class HistoryOut(Schema):
    parameter_version: int
    version: str | None
    sha256: str | None
    modified_at: dt.datetime | None
    modified_by: str | None
    deployment_id: int | None
    written_by: str
    purpose: str | None


def _environment_or_404(model: str, name: str) -> Environment:
    model_or_404(model)
    validate_environment_name(name)
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


def environment_as_dict(state: EnvironmentState) -> dict[str, Any]:
    environment = state.environment
    rollback = None
    if state.rollback is not None:
        target = state.rollback.pointer
        rollback = {
            "from_version": state.rollback.live.to_version,
            "from_sha256": state.rollback.live.sha256,
            "to_version": str(target.get("version") or ""),
            "to_sha256": str(target.get("sha256") or ""),
            "to_s3_version_id": str(target.get("s3_version_id") or ""),
        }
    return {
        "name": environment.name,
        "promoted_version": state.promoted_version,
        "pointer": state.pointer,
        "pointer_parameter_version": state.pointer_version,
        "pointer_error": state.pointer_error or None,
        "live_version": state.live.version if state.live else None,
        "live_sha256": state.live.sha256 if state.live else None,
        "live_error": (state.live.error or None) if state.live else None,
        "deployed_version": state.deployed.to_version if state.deployed else None,
        "drift": state.drift.as_dict() if state.drift else None,
        "target": environment.target,
        "service_arn": environment.service_arn,
        "promote_role": environment.promote_role,
        "requires_admin": environment.requires_admin,
        "requires_approval": environment.requires_approval,
        "requires_reason": environment.requires_reason,
        "frozen": environment.frozen,
        "freeze_reason": environment.freeze_reason,
        "alert": state.alert or None,
        "rollback": rollback,
        "deployment_in_flight": deployment_as_dict(state.in_flight) if state.in_flight else None,
    }


@router.get("models/{model}/environments", response=list[EnvironmentOut])
def environments(request: HttpRequest, model: str) -> list[dict[str, Any]]:
    api_require_role(request, VIEWER)
    model_or_404(model)
    return [environment_as_dict(s) for s in environment_states(list(environment_list(model=model)))]


@router.post(
    "models/{model}/environments/{environment}/promote",
    response={202: DeploymentOut},
    summary="Ask to make a version live in an environment",
    description="202 with the deployment (pending, or awaiting_approval when the environment "
    "needs a second person); 409 while another deployment of the environment is in flight or "
    "it is frozen; 400 for a version that is not valid or a missing required reason; 403 "
    "without the environment's promote role.",
    auth=role_auth(DEPLOYER),
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
    summary="Redeploy the exact pointer that was live before the live deployment",
    description="A reason is required. Rollbacks skip approval and deploy freezes.",
    auth=role_auth(DEPLOYER),
)
def rollback(
    request: HttpRequest, model: str, environment: str, payload: ReasonIn | None = None
) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    env = _environment_or_404(model, environment)
    reason = payload.reason if payload is not None else ""
    deployment = deployment_rollback(environment=env, user=request.user, reason=reason)
    return Status(202, deployment_as_dict(deployment))


@router.get(
    "models/{model}/environments/{environment}/history",
    response=list[HistoryOut],
    summary="The pointer's SSM history beside the dashboard's own record",
    description="Newest first; an entry with no deployment_id was written outside the "
    "dashboard (or is where the environment started).",
)
def history(request: HttpRequest, model: str, environment: str) -> list[dict[str, Any]]:
    api_require_role(request, VIEWER)
    env = _environment_or_404(model, environment)
    return environment_history(environment=env)


@router.get("deployments/{deployment_id}", response=DeploymentOut)
def deployment(request: HttpRequest, deployment_id: int) -> dict[str, Any]:
    api_require_role(request, VIEWER)
    found = deployment_get(deployment_id=deployment_id)
    if found is None:
        raise Http404(f"no deployment #{deployment_id}")
    return deployment_as_dict(found)


@router.post(
    "deployments/{deployment_id}/approve",
    response=DeploymentOut,
    summary="Approve a promotion awaiting approval (not your own)",
    auth=role_auth(DEPLOYER),
)
def approve(
    request: HttpRequest, deployment_id: int, payload: ReasonIn | None = None
) -> dict[str, Any]:
    api_require_role(request, DEPLOYER)
    if deployment_get(deployment_id=deployment_id) is None:
        raise Http404(f"no deployment #{deployment_id}")
    found = deployment_approve(
        deployment_id=deployment_id,
        user=request.user,
        reason=payload.reason if payload is not None else "",
    )
    return deployment_as_dict(found)


@router.post(
    "deployments/{deployment_id}/reject",
    response=DeploymentOut,
    summary="Reject a promotion awaiting approval (not your own)",
    auth=role_auth(DEPLOYER),
)
def reject(
    request: HttpRequest, deployment_id: int, payload: ReasonIn | None = None
) -> dict[str, Any]:
    api_require_role(request, DEPLOYER)
    if deployment_get(deployment_id=deployment_id) is None:
        raise Http404(f"no deployment #{deployment_id}")
    found = deployment_reject(
        deployment_id=deployment_id,
        user=request.user,
        reason=payload.reason if payload is not None else "",
    )
    return deployment_as_dict(found)


class AbortIn(Schema):
    reason: str = Field(..., min_length=1, max_length=500)


@router.post(
    "deployments/{deployment_id}/abort",
    response={202: DeploymentOut},
    summary="Stop a deployment in flight and put back what was live",
    description="An extension of the contract. The deployment ends failed (nothing was changed "
    "yet) or rolled_back. ECS stops its service deployment at once; App Runner cannot stop an "
    "operation, so the dashboard follows it to its end and then rolls back. A request still "
    "awaiting approval is withdrawn by its requester (others reject it). 409 when it is final.",
    auth=role_auth(DEPLOYER),
)
def abort(request: HttpRequest, deployment_id: int, payload: AbortIn) -> Status[dict[str, Any]]:
    api_require_role(request, DEPLOYER)
    if deployment_get(deployment_id=deployment_id) is None:
        raise Http404(f"no deployment #{deployment_id}")
    found = deployment_abort(deployment_id=deployment_id, user=request.user, reason=payload.reason)
    return Status(202, deployment_as_dict(found))
