"""Reads about environments and deployments."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from dashboard.aws import ssm
from dashboard.aws.errors import AwsError
from dashboard.deployments.live import LiveVersion, live_version
from dashboard.deployments.models import Deployment, Environment
from dashboard.deployments.pointer import PointerInvalid, pointer_parse


@dataclass(frozen=True)
class EnvironmentState:
    environment: Environment
    pointer: dict[str, Any] | None
    pointer_error: str
    live: LiveVersion | None
    in_flight: Deployment | None
    rollback_to: str | None = None

    @property
    def promoted_version(self) -> str | None:
        return self.pointer.get("version") if self.pointer else None


def environment_base_url(environment: Environment) -> str:
    """The service's base URL: the configured one, else App Runner's domain."""
    if environment.service_url:
        return environment.service_url.rstrip("/")
    from dashboard.aws import apprunner

    try:
        domain = apprunner.describe_service(service_arn=environment.service_arn).url
    except AwsError:
        return ""
    return f"https://{domain}" if domain else ""


def environment_list(*, model: str) -> QuerySet[Environment]:
    return Environment.objects.filter(model_name=model)


def environment_get(*, model: str, name: str) -> Environment | None:
    return Environment.objects.filter(model_name=model, name=name).first()


def deployment_in_flight(*, environment: Environment) -> Deployment | None:
    return environment.deployments.filter(status__in=Deployment.IN_FLIGHT).first()


def environment_states(
    environments: list[Environment], *, with_live: bool = True
) -> list[EnvironmentState]:
    """Pointer, live version and in-flight deployment of each environment.

    The services are asked in parallel, each with a short timeout, so one
    unreachable service does not make the page wait for all of them.
    """

    def remote(environment: Environment) -> tuple[dict[str, Any] | None, str, LiveVersion | None]:
        # Only AWS and HTTP calls here: database work stays on the caller's
        # thread, where Django manages the connection.
        pointer, pointer_error = None, ""
        try:
            raw = ssm.get_parameter(name=environment.ssm_parameter)
            pointer = pointer_parse(raw, model=environment.model_name) if raw else None
        except AwsError as exc:
            pointer_error = str(exc)  # the operation and an error id, no AWS text
        except PointerInvalid as exc:
            # Someone wrote junk to SSM: say so, show none of it.
            pointer_error = f"the pointer in SSM breaks the contract: {exc}"
        live = (
            live_version(base_url=environment_base_url(environment), timeout=2.0)
            if with_live
            else None
        )
        return pointer, pointer_error, live

    if len(environments) <= 1:
        results = [remote(e) for e in environments]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(environments))) as pool:
            results = list(pool.map(remote, environments))
    return [
        EnvironmentState(
            environment=environment,
            pointer=pointer,
            pointer_error=pointer_error,
            live=live,
            in_flight=deployment_in_flight(environment=environment),
            rollback_to=_rollback_version(environment),
        )
        for environment, (pointer, pointer_error, live) in zip(environments, results, strict=True)
    ]


def deployment_list(*, model: str | None = None, limit: int = 50) -> QuerySet[Deployment]:
    qs = Deployment.objects.select_related("environment", "requested_by")
    if model is not None:
        qs = qs.filter(environment__model_name=model)
    return qs[:limit]


def deployment_get(*, deployment_id: int) -> Deployment | None:
    return (
        Deployment.objects.select_related("environment", "requested_by")
        .filter(pk=deployment_id)
        .first()
    )


def deployment_as_dict(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.pk,
        "model": deployment.environment.model_name,
        "environment": deployment.environment.name,
        "kind": deployment.kind,
        "from_version": deployment.from_version or None,
        "to_version": deployment.to_version,
        "status": deployment.status,
        "operation_id": deployment.operation_id or None,
        "requested_by": deployment.requested_by.get_username() if deployment.requested_by else None,
        "reason": deployment.reason,
        "live_version": deployment.live_version or None,
        "created_at": deployment.created_at,
        "started_at": deployment.started_at,
        "finished_at": deployment.finished_at,
        "error": deployment.error or None,
        "events": [
            {"at": e.at, "level": e.level, "message": e.message} for e in deployment.events.all()
        ],
    }


def serving_map(*, model: str) -> dict[str, list[str]]:
    """version -> names of the environments whose pointer names it (from the
    database's copy of the pointers; no AWS call)."""
    serving: dict[str, list[str]] = {}
    for name, version in Environment.objects.filter(model_name=model).values_list(
        "name", "promoted_version"
    ):
        if version:
            serving.setdefault(version, []).append(name)
    return serving


def _rollback_version(environment: Environment) -> str | None:
    from dashboard.deployments.services import rollback_target

    target = rollback_target(environment=environment)
    return target[0] if target else None
