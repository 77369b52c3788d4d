"""Reads about environments and deployments (including the live checks:
SSM's pointer and the service's /version, cached briefly)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import OuterRef, QuerySet, Subquery

from dashboard.accounts.roles import ADMIN, DEPLOYER, user_has_role
from dashboard.aws import ssm
from dashboard.aws.errors import AwsError
from dashboard.deployments.live import LiveVersion, live_version
from dashboard.deployments.models import Deployment, Environment, PointerChange, PointerWrite
from dashboard.deployments.pointer import (
    PointerInvalid,
    pointer_loads,
    pointer_parse,
    pointer_same_artifact,
)
from dashboard.deployments.statecache import state_cache_key


@dataclass(frozen=True)
class RemoteState:
    """What AWS and the service say about an environment right now."""

    pointer: dict[str, Any] | None
    pointer_version: int | None
    pointer_error: str
    live: LiveVersion | None


@dataclass(frozen=True)
class Drift:
    """The pointer, the live service and the last successful deployment disagree."""

    kind: str  # pointer_changed | service_differs | pointer_and_service_differ
    reason: str  # a sentence a person can act on
    pointer_version: str | None
    live_version: str | None
    deployed_version: str | None
    pointer_sha256: str | None
    live_sha256: str | None
    deployed_sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "pointer_version": self.pointer_version,
            "live_version": self.live_version,
            "deployed_version": self.deployed_version,
            "pointer_sha256": self.pointer_sha256,
            "live_sha256": self.live_sha256,
            "deployed_sha256": self.deployed_sha256,
        }


@dataclass(frozen=True)
class RollbackPlan:
    live: Deployment  # the live deployment a rollback undoes
    pointer: dict[str, Any]  # the exact pointer it redeploys
    source: Deployment | None  # the deployment that made that pointer live, if any


@dataclass(frozen=True)
class EnvironmentState:
    environment: Environment
    pointer: dict[str, Any] | None
    pointer_version: int | None
    pointer_error: str
    live: LiveVersion | None
    in_flight: Deployment | None
    deployed: Deployment | None
    drift: Drift | None
    rollback: RollbackPlan | None
    alert: str = ""

    @property
    def promoted_version(self) -> str | None:
        return self.pointer.get("version") if self.pointer else None

    @property
    def rollback_to(self) -> str | None:
        return str(self.rollback.pointer.get("version")) if self.rollback else None


def environment_base_url(environment: Environment) -> str:
    """The service's base URL: the configured one, else what the target reports."""
    if environment.service_url:
        return environment.service_url.rstrip("/")
    from dashboard.deployments.targets import TargetError, target_for

    try:
        return target_for(environment).describe().url
    except (AwsError, TargetError):
        return ""


def environment_list(*, model: str) -> QuerySet[Environment]:
    return Environment.objects.filter(model_name=model)


def environment_get(*, model: str, name: str) -> Environment | None:
    return Environment.objects.filter(model_name=model, name=name).first()


def deployment_in_flight(*, environment: Environment) -> Deployment | None:
    return environment.deployments.filter(status__in=Deployment.IN_FLIGHT).first()


def environment_live_deployment(*, environment: Environment) -> Deployment | None:
    """The environment's last successful deployment: what the dashboard made live."""
    return (
        environment.deployments.filter(status=Deployment.Status.SUCCEEDED)
        .order_by("-finished_at", "-id")
        .first()
    )


def rollback_plan(*, environment: Environment) -> RollbackPlan | None:
    """What a rollback of ``environment`` would redeploy, or None."""
    return _rollback_plan_of(environment_live_deployment(environment=environment))


def _rollback_plan_of(live: Deployment | None) -> RollbackPlan | None:
    if live is None or not live.rollback_pointer:
        return None
    return RollbackPlan(live=live, pointer=live.rollback_pointer, source=live.rollback_source)


def environment_remote_state(environment: Environment, *, fresh: bool = False) -> RemoteState:
    """SSM's pointer and the service's /version, cached for
    ENVIRONMENT_STATE_CACHE_SECONDS so page views do not multiply AWS calls.
    Only AWS and HTTP calls here (it runs on worker threads)."""
    key = state_cache_key(environment.pk)
    if not fresh:
        cached = cache.get(key)
        if isinstance(cached, RemoteState):
            return cached
    pointer, pointer_version, pointer_error = None, None, ""
    try:
        found = ssm.get_parameter_version(name=environment.ssm_parameter)
        if found is None:
            pointer_error = f"SSM parameter {environment.ssm_parameter} does not exist"
        else:
            pointer_version = found.version
            pointer = pointer_parse(found.value, model=environment.model_name)
    except AwsError as exc:
        pointer_error = str(exc)  # the operation and an error id, no AWS text
    except PointerInvalid as exc:
        # Someone wrote junk to SSM: say what is wrong, show none of it.
        pointer_error = (
            f"the pointer in SSM breaks the contract (SSM version {pointer_version}): {exc}"
        )
    live = live_version(base_url=environment_base_url(environment), timeout=2.0)
    state = RemoteState(pointer, pointer_version, pointer_error, live)
    if settings.ENVIRONMENT_STATE_CACHE_SECONDS > 0:
        cache.set(key, state, settings.ENVIRONMENT_STATE_CACHE_SECONDS)
    return state


def drift_of(
    *, remote: RemoteState, deployed: Deployment | None, in_flight: Deployment | None
) -> Drift | None:
    """Compare the pointer, the live service and the last successful deployment."""
    if in_flight is not None and in_flight.status != Deployment.Status.AWAITING_APPROVAL:
        return None  # they disagree on purpose while a deployment moves them
    pointer = remote.pointer
    live = remote.live if remote.live is not None and remote.live.sha256 else None
    deployed_pointer = deployed.pointer if deployed is not None else None
    pointer_ok = deployed_pointer is None or pointer_same_artifact(pointer, deployed_pointer)
    reference = deployed_pointer or pointer
    live_ok = live is None or reference is None or live.sha256 == reference.get("sha256")
    if pointer_ok and live_ok:
        return None
    deployed_version = deployed.to_version if deployed is not None else None
    pointer_name = str(pointer.get("version")) if pointer else None
    fields: dict[str, Any] = {
        "pointer_version": pointer_name,
        "live_version": live.version if live else None,
        "deployed_version": deployed_version,
        "pointer_sha256": str(pointer.get("sha256")) if pointer else None,
        "live_sha256": live.sha256 if live else None,
        "deployed_sha256": deployed.sha256 if deployed is not None else None,
    }
    shown_pointer = pointer_name or "nothing readable"
    if not pointer_ok and live_ok:
        if pointer_name is None:
            # Unreadable (edited by hand, or by another tool): nothing to promote.
            reason = (
                "The pointer was changed outside the dashboard and is not a valid pointer, but "
                f"the last deployment made {deployed_version} live and the service serves it. "
                f"Restore the pointer to {deployed_version}."
            )
        else:
            reason = (
                f"The pointer was changed outside the dashboard: it names {pointer_name}, but "
                f"the last deployment made {deployed_version} live and the service serves it. "
                f"Restore the pointer to {deployed_version}"
                + (
                    f", or promote {pointer_name} to deploy it."
                    if _promotable(pointer)
                    else f" ({pointer_name} is not a valid version of the registry)."
                )
            )
        return Drift(kind="pointer_changed", reason=reason, **fields)
    if pointer_ok:
        expected = deployed_version or shown_pointer
        named_by = "the pointer and the last deployment name" if deployed else "the pointer names"
        return Drift(
            kind="service_differs",
            reason=(
                f"The service serves {live.version if live else '?'}, not {expected}, which "
                f"{named_by}: the service or the pointer was changed outside the dashboard. "
                f"Promote the version that should serve to make them agree."
            ),
            **fields,
        )
    return Drift(
        kind="pointer_and_service_differ",
        reason=(
            f"Neither the pointer ({shown_pointer}) nor the service "
            f"({live.version if live else '?'}) matches the last deployment "
            f"({deployed_version}). Promote the version that should serve to make all three "
            "agree."
        ),
        **fields,
    )


def _promotable(pointer: dict[str, Any] | None) -> bool:
    """Whether the registry holds the pointer's version as a valid version."""
    from dashboard.registry.models import ModelVersion

    if not pointer:
        return False
    return ModelVersion.objects.filter(
        model_name=pointer.get("model"),
        version=pointer.get("version"),
        status=ModelVersion.Status.VALID,
    ).exists()


def environment_states(
    environments: list[Environment], *, with_live: bool = True
) -> list[EnvironmentState]:
    """Pointer, live version, drift and in-flight deployment of each
    environment. The services are asked in parallel (and cached), so one
    unreachable service does not make the page wait for all of them."""
    if not with_live:
        remotes = [RemoteState(None, None, "", None) for _ in environments]
    elif len(environments) <= 1:
        remotes = [environment_remote_state(e) for e in environments]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(environments))) as pool:
            remotes = list(pool.map(environment_remote_state, environments))
    in_flight_of, deployed_of = _deployments_of(environments)
    states = []
    for environment, remote in zip(environments, remotes, strict=True):
        in_flight = in_flight_of.get(environment.pk)
        deployed = deployed_of.get(environment.pk)
        plan = _rollback_plan_of(deployed)
        states.append(
            EnvironmentState(
                environment=environment,
                pointer=remote.pointer,
                pointer_version=remote.pointer_version,
                pointer_error=remote.pointer_error,
                live=remote.live,
                in_flight=in_flight,
                deployed=deployed,
                drift=drift_of(remote=remote, deployed=deployed, in_flight=in_flight)
                if with_live
                else None,
                rollback=plan,
                alert=in_flight.alert if in_flight is not None else "",
            )
        )
    return states


def _deployments_of(
    environments: list[Environment],
) -> tuple[dict[int, Deployment], dict[int, Deployment]]:
    """Each environment's deployment in flight and last successful one, in
    three queries whatever the number of environments (a page lists them all)."""
    by_pk = {environment.pk: environment for environment in environments}
    if not by_pk:
        return {}, {}
    in_flight: dict[int, Deployment] = {}
    for deployment in Deployment.objects.filter(
        environment_id__in=by_pk, status__in=Deployment.IN_FLIGHT
    ):
        in_flight.setdefault(deployment.environment_id, deployment)
    last_success = (
        Deployment.objects.filter(environment=OuterRef("pk"), status=Deployment.Status.SUCCEEDED)
        .order_by("-finished_at", "-id")
        .values("pk")[:1]
    )
    live_ids = dict(
        Environment.objects.filter(pk__in=by_pk)
        .annotate(live_id=Subquery(last_success))
        .exclude(live_id=None)
        .values_list("live_id", "pk")
    )
    deployed: dict[int, Deployment] = {}
    for deployment in Deployment.objects.filter(pk__in=live_ids):
        deployed[live_ids[deployment.pk]] = deployment
    for deployment in (*in_flight.values(), *deployed.values()):
        deployment.environment = by_pk[deployment.environment_id]  # no query per row
    return in_flight, deployed


def environment_history(*, environment: Environment) -> list[dict[str, Any]]:
    """The pointer's SSM history beside the dashboard's own record, newest
    first: a version no deployment wrote was changed outside the dashboard."""
    writes = {
        w.parameter_version: w
        for w in PointerWrite.objects.filter(environment=environment).select_related("deployment")
    }
    rows = []
    for item in ssm.get_parameter_history(name=environment.ssm_parameter):
        pointer = pointer_loads(item.value)
        write = writes.get(item.version)
        rows.append(
            {
                "parameter_version": item.version,
                "version": str(pointer.get("version")) if pointer else None,
                "sha256": str(pointer.get("sha256")) if pointer else None,
                "modified_at": item.modified_at,
                "modified_by": item.modified_by or None,
                "deployment_id": write.deployment_id if write is not None else None,
                "written_by": ("modeldeck" if write is not None else "outside the dashboard"),
                "purpose": write.purpose if write is not None else None,
                "readable": pointer is not None,
            }
        )
    return rows


def pointer_changes(*, environment: Environment, limit: int = 20) -> QuerySet[PointerChange]:
    return environment.pointer_changes.all()[:limit]


def deployment_list(
    *, model: str | None = None, environment: Environment | None = None, limit: int = 50
) -> QuerySet[Deployment]:
    qs = Deployment.objects.select_related("environment")
    if model is not None:
        qs = qs.filter(environment__model_name=model)
    if environment is not None:
        qs = qs.filter(environment=environment)
    return qs[:limit]


def deployment_get(*, deployment_id: int) -> Deployment | None:
    return Deployment.objects.select_related("environment").filter(pk=deployment_id).first()


def _short(sha: str | None) -> str | None:
    return sha or None


def deployment_as_dict(deployment: Deployment, *, events: bool = True) -> dict[str, Any]:
    """The deployment as the API (CONTRACT.md section 4) and webhooks show it."""
    data: dict[str, Any] = {
        "id": deployment.pk,
        "model": deployment.environment.model_name,
        "environment": deployment.environment.name,
        "kind": deployment.kind,
        "from_version": deployment.from_version or None,
        "to_version": deployment.to_version,
        "from_sha256": _short(deployment.previous_sha256),
        "to_sha256": _short(deployment.sha256),
        "status": deployment.status,
        "operation_id": deployment.operation_id or None,
        "operation_status": deployment.operation_status or None,
        "parameter_version": deployment.parameter_version,
        "requested_by": deployment.requested_by_name or None,
        "approved_by": deployment.approved_by_name or None,
        "decision_reason": deployment.decision_reason or None,
        "reason": deployment.reason,
        "live_version": deployment.live_version or None,
        "live_sha256": deployment.live_sha256 or None,
        "undoes": deployment.undoes_id,
        "created_at": deployment.created_at,
        "started_at": deployment.started_at,
        "live_at": deployment.live_at,
        "finished_at": deployment.finished_at,
        "expires_at": deployment.expires_at
        if deployment.status == Deployment.Status.AWAITING_APPROVAL
        else None,
        "error": deployment.error or None,
        "alert": deployment.alert or None,
    }
    if events:
        data["events"] = [
            {"at": e.at, "level": e.level, "message": e.message} for e in deployment.events.all()
        ]
    return data


def serving_map(*, model: str) -> dict[str, list[str]]:
    """version -> names of the environments the dashboard made it live in
    (from the database; no AWS call)."""
    serving: dict[str, list[str]] = {}
    for name, version in Environment.objects.filter(model_name=model).values_list(
        "name", "promoted_version"
    ):
        if version:
            serving.setdefault(version, []).append(name)
    return serving


def user_may_deploy(user: Any, environment: Environment) -> bool:
    """May ``user`` promote to, roll back or approve for ``environment``?"""
    needed = ADMIN if environment.promote_role == Environment.PromoteRole.ADMIN else DEPLOYER
    return user_has_role(user, needed)


def user_may_decide(user: Any, deployment: Deployment) -> bool:
    """May ``user`` approve or reject ``deployment`` (never their own)?"""
    return (
        deployment.status == Deployment.Status.AWAITING_APPROVAL
        and user_may_deploy(user, deployment.environment)
        and deployment.requested_by_id != getattr(user, "pk", None)
    )


def approvals_waiting_for(user: Any) -> list[Deployment]:
    """Promotions waiting for a decision ``user`` may take."""
    waiting = Deployment.objects.select_related("environment").filter(
        status=Deployment.Status.AWAITING_APPROVAL
    )
    return [d for d in waiting if user_may_decide(user, d)]
