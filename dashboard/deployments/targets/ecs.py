"""Amazon ECS as a deploy target: Express Mode services and classic services.

Both pin the pointer the same way as App Runner: the inference container's
``MODEL_SSM_PARAMETER`` names the pointer's SSM parameter *version*
(``/models/iris/production:7``), so every task ECS starts for that revision
loads exactly that version, and ECS's own rollback restores the previous pin.

- **Express Mode** (``ecs_express``): ``UpdateExpressGatewayService`` with the
  primary container as it is, only that variable changed. ECS creates a
  service revision and deploys it as a canary (5 % of the traffic, bake,
  alarm-based rollback by default).
- **Classic service** (``ecs``, deployment controller ``ECS``: rolling, blue/
  green, linear or canary): a copy of the service's task definition with the
  variable changed is registered and deployed with ``UpdateService``; the
  service's own deployment configuration (circuit breaker, alarms, strategy)
  applies.

Either way ECS reports the rollout as a *service deployment*, which is what
the reconciler follows (its ARN is the operation id): ``status`` says where it
is, ``lifecycleStage`` and the revisions' traffic weights how far the canary
got (``OperationState.detail``, shown on the deployment page). A circuit
breaker or alarm rollback ends ``ROLLBACK_SUCCESSFUL``: ``rolled_back``. The
dashboard's rollback while a deployment runs is ``StopServiceDeployment`` with
``stopType=ROLLBACK``.

ECS does not refuse an update while a deployment runs (it stops the running
one and starts another), so ``start`` refuses first when the service has a
deployment in flight.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from django.utils import timezone

from dashboard.aws import ecs
from dashboard.aws.errors import AwsConflictError, AwsError, AwsNotFoundError
from dashboard.deployments.targets.base import (
    OperationState,
    Phase,
    Revision,
    TargetBusy,
    TargetError,
)

PIN_VARIABLE = "MODEL_SSM_PARAMETER"

# Every service deployment status of the pinned service model, and
# STOP_IN_PROGRESS, which ECS's guide lists among the ongoing states.
PHASES: dict[str, Phase] = {
    "PENDING": Phase.RUNNING,
    "IN_PROGRESS": Phase.RUNNING,
    "STOP_REQUESTED": Phase.RUNNING,
    "STOP_IN_PROGRESS": Phase.RUNNING,
    "ROLLBACK_REQUESTED": Phase.RUNNING,
    "ROLLBACK_IN_PROGRESS": Phase.RUNNING,
    "SUCCESSFUL": Phase.SUCCEEDED,
    "ROLLBACK_SUCCESSFUL": Phase.ROLLED_BACK,
    # The previous revision could not be put back: nobody knows what serves.
    "ROLLBACK_FAILED": Phase.FAILED,
    # Stopped without a rollback (circuit breaker with rollback off, an ABORT,
    # or superseded by another update): the restore step looks at what serves.
    "STOPPED": Phase.FAILED,
}

# lifecycleStage, as the deployment page says it.
STAGES: dict[str, str] = {
    "RECONCILE_SERVICE": "reconciling the service's active revisions",
    "PRE_SCALE_UP": "preparing the new revision",
    "SCALE_UP": "starting the new revision's tasks",
    "POST_SCALE_UP": "the new revision's tasks are up",
    "TEST_TRAFFIC_SHIFT": "moving test traffic to the new revision",
    "POST_TEST_TRAFFIC_SHIFT": "test traffic on the new revision",
    "PRODUCTION_TRAFFIC_SHIFT": "moving production traffic to the new revision",
    "POST_PRODUCTION_TRAFFIC_SHIFT": "production traffic on the new revision",
    "BAKE_TIME": "baking: the previous revision stays ready for a rollback",
    "CLEAN_UP": "stopping the previous revision's tasks",
}

# How long a revision ECS has not yet listed a deployment for counts as
# "about to start" rather than "gone".
UNLISTED_GRACE = dt.timedelta(minutes=5)

T = TypeVar("T")


def operation_state(info: ecs.ServiceDeploymentInfo) -> OperationState:
    """One look at a service deployment, in the interface's terms."""
    phase = PHASES.get(info.status, Phase.RUNNING)
    detail: dict[str, Any] = {}
    if info.lifecycle_stage:
        detail["stage"] = info.lifecycle_stage
        detail["stage_label"] = STAGES.get(info.lifecycle_stage, info.lifecycle_stage.lower())
    if info.strategy:
        detail["strategy"] = info.strategy
    target = info.target
    if target is not None:
        if target.production_traffic is not None:
            detail["traffic_new"] = target.production_traffic
        if target.test_traffic:
            detail["test_traffic_new"] = target.test_traffic
        detail["tasks_new"] = f"{target.running_tasks}/{target.requested_tasks}"
    old = [s.production_traffic for s in info.sources if s.production_traffic is not None]
    if old:
        detail["traffic_old"] = sum(old)
    if info.circuit_breaker:
        detail["circuit_breaker"] = info.circuit_breaker
    if info.alarms:
        detail["alarms"] = info.alarms
    reason = _reason(info)
    if reason and phase != Phase.SUCCEEDED:
        detail["reason"] = reason
    return OperationState(
        phase=phase,
        status=info.status,
        started_at=info.started_at or info.created_at,
        ended_at=(info.finished_at or info.stopped_at) if phase != Phase.RUNNING else None,
        detail=detail,
    )


def _reason(info: ecs.ServiceDeploymentInfo) -> str:
    parts = []
    if info.circuit_breaker == "TRIGGERED":
        parts.append("the deployment circuit breaker tripped")
    if info.alarms == "TRIGGERED":
        names = ", ".join(info.triggered_alarms) or "an alarm"
        parts.append(f"{names} went into ALARM")
    if info.rollback_reason:
        parts.append(info.rollback_reason)
    elif info.status_reason:
        parts.append(info.status_reason)
    return "; ".join(parts)


def _asking(what: str, call: Callable[[], T]) -> T:
    """Run a call that changes the service: busy answers mean wait, refusals
    are TargetError, transient errors go up (the reconciler retries)."""
    try:
        return call()
    except AwsConflictError as exc:
        raise TargetBusy(str(exc)) from exc
    except AwsError as exc:
        if exc.transient:
            raise
        raise TargetError(f"ECS refused {what}: {exc}") from exc


def _pinned_environment(
    container: dict[str, Any], pin: str, *, where: str
) -> list[dict[str, Any]] | None:
    """The container's environment with the pin set, or None when the
    container does not read the pointer. Raises TargetError when it reads it
    from a secret (which cannot be pinned)."""
    if "MODEL_POINTER" in ecs.secrets_of(container):
        raise TargetError(
            f"{where} injects MODEL_POINTER from a secret, which cannot be pinned to a pointer "
            f"version; configure {PIN_VARIABLE} instead (docs/deploy-aws.md)"
        )
    environment = [dict(item) for item in container.get("environment") or []]
    found = False
    for item in environment:
        if item.get("name") == PIN_VARIABLE:
            item["value"] = pin
            found = True
    return environment if found else None


class _EcsTarget:
    """What both kinds share: the service deployments."""

    operation_label = "ECS service deployment"

    def __init__(self, *, service_arn: str) -> None:
        self.service_arn = service_arn
        try:
            self.cluster, self.service_name = ecs.service_arn_parts(service_arn)
        except ValueError as exc:
            raise TargetError(str(exc)) from exc

    # --- following -------------------------------------------------------------

    def find_started(self, *, since: dt.datetime) -> str | None:
        for brief in ecs.list_service_deployments(
            cluster=self.cluster, service=self.service_arn, created_after=since
        ):
            if brief.created_at is None or brief.created_at >= since:
                return brief.arn
        return None

    def poll(self, *, operation_id: str) -> OperationState | None:
        arn = self._deployment_arn(operation_id)
        if arn is None:
            return self._unlisted(operation_id)
        info = ecs.describe_service_deployment(deployment_arn=arn)
        return operation_state(info) if info is not None else None

    def stop(self, *, operation_id: str) -> bool:
        arn = self._deployment_arn(operation_id)
        if arn is None:
            return False
        try:
            ecs.stop_service_deployment(deployment_arn=arn)
        except AwsConflictError:
            return False  # it has ended: the reconciler follows it and puts things back
        return True

    # --- helpers -----------------------------------------------------------------

    def _busy(self) -> bool:
        return bool(
            ecs.list_service_deployments(
                cluster=self.cluster, service=self.service_arn, statuses=ecs.DEPLOYMENT_ACTIVE
            )
        )

    def _deployment_arn(self, operation_id: str) -> str | None:
        """The service deployment an operation id names: itself, or the one
        whose target revision is that service revision (Express) or runs that
        task definition (classic, when UpdateService did not name it)."""
        if ecs.is_service_deployment_arn(operation_id):
            return operation_id
        briefs = ecs.list_service_deployments(cluster=self.cluster, service=self.service_arn)
        for brief in briefs:
            if brief.target_revision_arn == operation_id:
                return brief.arn
        if ":task-definition/" not in operation_id:
            return None
        targets = [b.target_revision_arn for b in briefs if b.target_revision_arn]
        revisions = {
            r.arn: r.task_definition for r in ecs.describe_service_revisions(revision_arns=targets)
        }
        for brief in briefs:
            if revisions.get(brief.target_revision_arn) == operation_id:
                return brief.arn
        return None

    def _unlisted(self, operation_id: str) -> OperationState | None:
        """A revision ECS lists no deployment for (yet): pending while it is
        new, unknown (None) once it is old."""
        created: dt.datetime | None = None
        if ":task-definition/" in operation_id:
            created = ecs.describe_task_definition(task_definition=operation_id).registered_at
        else:
            found = ecs.describe_service_revisions(revision_arns=[operation_id])
            created = found[0].created_at if found else None
        if created is None or timezone.now() - created > UNLISTED_GRACE:
            return None
        return OperationState(
            phase=Phase.RUNNING,
            status="PENDING",
            detail={"stage_label": "waiting for ECS to start the service deployment"},
        )


class EcsExpressTarget(_EcsTarget):
    """An ECS Express Mode service."""

    label = "ECS Express Mode"

    def describe(self) -> Revision:
        service = self._describe()
        newest = service.newest()
        pin = ecs.environment_of(newest.primary_container).get(PIN_VARIABLE) if newest else None
        url = ""
        if newest is not None and newest.endpoints:
            endpoint = newest.endpoints[0]
            url = endpoint if "://" in endpoint else f"https://{endpoint}"
        return Revision(pin=pin, busy=self._busy(), url=url)

    def start(self, *, pin: str) -> str:
        if self._busy():
            raise TargetBusy("the ECS service has a deployment in progress")
        service = self._describe()
        newest = service.newest()
        if newest is None:
            raise TargetError(f"the Express service {self.service_arn} has no active configuration")
        container = copy.deepcopy(newest.primary_container)
        environment = _pinned_environment(container, pin, where="the Express service")
        if environment is None:
            raise TargetError(
                f"the Express service's primary container has no {PIN_VARIABLE} environment "
                "variable, so it does not read the pointer"
            )
        container["environment"] = environment
        revision = _asking(
            "the update",
            lambda: ecs.update_express_service(
                service_arn=self.service_arn, primary_container=container
            ),
        )
        if not revision:
            raise TargetError("ECS accepted the update but named no service revision")
        return self._deployment_arn(revision) or revision

    def _describe(self) -> ecs.ExpressService:
        try:
            return ecs.describe_express_service(service_arn=self.service_arn)
        except AwsNotFoundError as exc:
            raise TargetError(f"the Express service {self.service_arn} does not exist") from exc


class EcsServiceTarget(_EcsTarget):
    """A classic ECS service deployed by ECS itself (deployment controller ECS)."""

    label = "Amazon ECS"

    def describe(self) -> Revision:
        service = self._describe()
        definition = ecs.describe_task_definition(task_definition=service.task_definition)
        pin = None
        for container in definition.containers:
            value = ecs.environment_of(container).get(PIN_VARIABLE)
            if value is not None:
                pin = value
                break
        # ECS reports no URL of its own for a classic service (its load
        # balancer is elsewhere): the environment's service URL is required.
        return Revision(pin=pin, busy=self._busy())

    def start(self, *, pin: str) -> str:
        if self._busy():
            raise TargetBusy("the ECS service has a deployment in progress")
        service = self._describe()
        if service.deployment_controller != "ECS":
            raise TargetError(
                f"the ECS service uses the {service.deployment_controller} deployment "
                "controller; ModelDeck deploys services that ECS deploys itself"
            )
        definition = ecs.describe_task_definition(task_definition=service.task_definition)
        registration = copy.deepcopy(definition.registration)
        pinned = 0
        for container in registration.get("containerDefinitions") or []:
            environment = _pinned_environment(
                container, pin, where=f"container {container.get('name')!r}"
            )
            if environment is not None:
                container["environment"] = environment
                pinned += 1
        if not pinned:
            raise TargetError(
                f"no container of {definition.arn} has a {PIN_VARIABLE} environment variable, "
                "so the service does not read the pointer"
            )
        new_definition = _asking(
            "the new task definition",
            lambda: ecs.register_task_definition(registration=registration),
        )
        deployment = _asking(
            "the service update",
            lambda: ecs.update_service(
                cluster=self.cluster, service=self.service_arn, task_definition=new_definition
            ),
        )
        return deployment or new_definition

    def _describe(self) -> ecs.ServiceInfo:
        try:
            return ecs.describe_service(cluster=self.cluster, service=self.service_arn)
        except AwsNotFoundError as exc:
            raise TargetError(f"the ECS service {self.service_arn} does not exist") from exc
