"""Amazon ECS: the services that run the inference containers on ECS, either
ECS Express Mode services or classic ECS services, and their service
deployments (the rollouts ECS reports for both kinds).

Shapes follow the service model of the pinned botocore (``ecs`` 2014-11-13,
which has the Express Mode and service deployment operations).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsConflictError, AwsError, AwsNotFoundError, translate

# Service deployment statuses of the service model (ServiceDeploymentStatus).
# STOP_IN_PROGRESS is not in the pinned model; ECS's documentation names it
# among the ongoing states, so it is treated as one if it ever appears.
DEPLOYMENT_ACTIVE = (
    "PENDING",
    "IN_PROGRESS",
    "STOP_REQUESTED",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
)
DEPLOYMENT_FINAL = ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")

# ECS answers a call that collides with a change under way with
# ClientException/InvalidParameterException and words like these (the model
# lists ConflictException only for StopServiceDeployment): "wait", not "refused".
_BUSY_MESSAGE = re.compile(
    r"in progress|already (being )?(updated|deployed)|currently (being )?updat", re.IGNORECASE
)


def _ecs() -> Any:
    return client("ecs")


def _translate(exc: Exception, *, operation: str) -> AwsError:
    error = translate(exc, operation=operation)
    if error.code in {"ClientException", "InvalidParameterException"} and _BUSY_MESSAGE.search(
        error.detail
    ):
        busy = AwsConflictError(
            str(error), code=error.code, operation=operation, detail=error.detail
        )
        busy.error_id = error.error_id
        return busy
    return error


# --- ARNs ----------------------------------------------------------------------------

_SERVICE_ARN = re.compile(r"arn:[a-z-]+:ecs:[a-z0-9-]+:\d{12}:service/([^/]+)/([^/]+)")


def service_arn_parts(service_arn: str) -> tuple[str, str]:
    """(cluster name, service name) of a service ARN in ECS's long format
    (``arn:aws:ecs:<region>:<account>:service/<cluster>/<name>``)."""
    match = _SERVICE_ARN.fullmatch(service_arn)
    if match is None:
        raise ValueError(f"{service_arn!r} is not an ECS service ARN with its cluster")
    return match.group(1), match.group(2)


def is_service_deployment_arn(value: str) -> bool:
    return ":service-deployment/" in value


# --- what the calls return ----------------------------------------------------------------


def environment_of(container: dict[str, Any]) -> dict[str, str]:
    """A container's plain environment variables (task definition or Express)."""
    return {
        str(item.get("name")): str(item.get("value", ""))
        for item in container.get("environment") or []
        if item.get("name")
    }


def secrets_of(container: dict[str, Any]) -> dict[str, str]:
    return {
        str(item.get("name")): str(item.get("valueFrom", ""))
        for item in container.get("secrets") or []
        if item.get("name")
    }


@dataclass(frozen=True)
class ExpressConfiguration:
    """One active configuration (service revision) of an Express service."""

    revision_arn: str
    primary_container: dict[str, Any]
    health_check_path: str
    endpoints: tuple[str, ...]  # PUBLIC first, as ECS reports them (no scheme)
    created_at: dt.datetime | None
    task_definition_arn: str = ""
    # The primary container's awslogs destination (awsLogsConfiguration).
    log_group: str = ""
    log_stream_prefix: str = ""


@dataclass(frozen=True)
class ExpressService:
    arn: str
    cluster: str
    name: str
    status: str  # ACTIVE, DRAINING, INACTIVE
    current_deployment: str
    configurations: tuple[ExpressConfiguration, ...]

    def newest(self) -> ExpressConfiguration | None:
        """The configuration the service runs or is moving to (the newest active one)."""
        if not self.configurations:
            return None
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        return max(self.configurations, key=lambda c: c.created_at or epoch)


@dataclass(frozen=True)
class LoadBalancerRef:
    """One of a service's ``loadBalancers``: the target group ECS registers its
    tasks in (and, for blue/green, the alternate one traffic moves to)."""

    target_group_arn: str
    alternate_target_group_arn: str = ""
    container_name: str = ""


@dataclass(frozen=True)
class ServiceInfo:
    """A classic ECS service (DescribeServices)."""

    arn: str
    cluster_arn: str
    name: str
    status: str  # ACTIVE, DRAINING, INACTIVE
    task_definition: str
    current_deployment: str
    deployment_controller: str  # ECS, CODE_DEPLOY, EXTERNAL
    load_balancers: tuple[LoadBalancerRef, ...] = ()


@dataclass(frozen=True)
class TaskDefinitionInfo:
    arn: str
    registered_at: dt.datetime | None
    # The task definition as RegisterTaskDefinition takes it (only the members
    # its input accepts), to register a copy.
    registration: dict[str, Any] = field(default_factory=dict)

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.registration.get("containerDefinitions") or [])


@dataclass(frozen=True)
class DeploymentBrief:
    """A service deployment as ListServiceDeployments lists it."""

    arn: str
    status: str
    target_revision_arn: str
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    status_reason: str = ""


@dataclass(frozen=True)
class RevisionWeights:
    """A service revision's part in a deployment (ServiceRevisionSummary)."""

    arn: str
    requested_tasks: int
    running_tasks: int
    pending_tasks: int
    production_traffic: float | None  # percent; None when ECS does not say
    test_traffic: float | None


@dataclass(frozen=True)
class ServiceDeploymentInfo:
    """One service deployment (DescribeServiceDeployments)."""

    arn: str
    status: str
    status_reason: str
    lifecycle_stage: str
    target: RevisionWeights | None
    sources: tuple[RevisionWeights, ...]
    strategy: str  # ROLLING, BLUE_GREEN, LINEAR, CANARY ('' when not reported)
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    stopped_at: dt.datetime | None
    rollback_reason: str
    rollback_revision_arn: str
    circuit_breaker: str  # TRIGGERED, MONITORING, MONITORING_COMPLETE, DISABLED
    alarms: str
    triggered_alarms: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.status in DEPLOYMENT_ACTIVE or self.status == "STOP_IN_PROGRESS"


@dataclass(frozen=True)
class ServiceRevisionInfo:
    arn: str
    task_definition: str
    created_at: dt.datetime | None
    # What ECS provisioned for an Express revision (ecsManagedResources'
    # ingress paths): its load balancer(s) and target groups, by ARN.
    managed_load_balancer_arns: tuple[str, ...] = ()
    managed_target_group_arns: tuple[str, ...] = ()


def _express_configuration(raw: dict[str, Any]) -> ExpressConfiguration:
    paths = list(raw.get("ingressPaths") or [])
    paths.sort(key=lambda p: p.get("accessType") != "PUBLIC")
    container = dict(raw.get("primaryContainer") or {})
    logs = container.get("awsLogsConfiguration") or {}
    return ExpressConfiguration(
        revision_arn=str(raw.get("serviceRevisionArn", "")),
        primary_container=container,
        health_check_path=str(raw.get("healthCheckPath", "")),
        endpoints=tuple(str(p["endpoint"]) for p in paths if p.get("endpoint")),
        created_at=raw.get("createdAt"),
        task_definition_arn=str(raw.get("taskDefinitionArn", "")),
        log_group=str(logs.get("logGroup", "")),
        log_stream_prefix=str(logs.get("logStreamPrefix", "")),
    )


def _weights(raw: dict[str, Any] | None) -> RevisionWeights | None:
    if not raw:
        return None
    production = raw.get("requestedProductionTrafficWeight")
    test = raw.get("requestedTestTrafficWeight")
    return RevisionWeights(
        arn=str(raw.get("arn", "")),
        requested_tasks=int(raw.get("requestedTaskCount") or 0),
        running_tasks=int(raw.get("runningTaskCount") or 0),
        pending_tasks=int(raw.get("pendingTaskCount") or 0),
        production_traffic=float(production) if production is not None else None,
        test_traffic=float(test) if test is not None else None,
    )


def _service_deployment(raw: dict[str, Any]) -> ServiceDeploymentInfo:
    rollback = raw.get("rollback") or {}
    breaker = raw.get("deploymentCircuitBreaker") or {}
    alarms = raw.get("alarms") or {}
    configuration = raw.get("deploymentConfiguration") or {}
    sources = [_weights(s) for s in raw.get("sourceServiceRevisions") or []]
    return ServiceDeploymentInfo(
        arn=str(raw.get("serviceDeploymentArn", "")),
        status=str(raw.get("status", "")),
        status_reason=str(raw.get("statusReason", "")),
        lifecycle_stage=str(raw.get("lifecycleStage", "")),
        target=_weights(raw.get("targetServiceRevision")),
        sources=tuple(s for s in sources if s is not None),
        strategy=str(configuration.get("strategy", "")),
        created_at=raw.get("createdAt"),
        started_at=raw.get("startedAt"),
        finished_at=raw.get("finishedAt"),
        stopped_at=raw.get("stoppedAt"),
        rollback_reason=str(rollback.get("reason", "")),
        rollback_revision_arn=str(rollback.get("serviceRevisionArn", "")),
        circuit_breaker=str(breaker.get("status", "")),
        alarms=str(alarms.get("status", "")),
        triggered_alarms=tuple(str(a) for a in alarms.get("triggeredAlarmNames") or []),
    )


# --- Express Mode services ------------------------------------------------------------------


def describe_express_service(*, service_arn: str) -> ExpressService:
    try:
        response = _ecs().describe_express_gateway_service(serviceArn=service_arn)
    except Exception as exc:
        raise _translate(exc, operation="DescribeExpressGatewayService") from exc
    raw = response.get("service") or {}
    return ExpressService(
        arn=str(raw.get("serviceArn", service_arn)),
        cluster=str(raw.get("cluster", "")),
        name=str(raw.get("serviceName", "")),
        status=str((raw.get("status") or {}).get("statusCode", "")),
        current_deployment=str(raw.get("currentDeployment", "")),
        configurations=tuple(
            _express_configuration(c) for c in raw.get("activeConfigurations") or []
        ),
    )


def update_express_service(*, service_arn: str, primary_container: dict[str, Any]) -> str:
    """Replace the Express service's primary container (everything else stays):
    ECS creates a service revision and deploys it (a canary by default).
    Return the new service revision's ARN."""
    try:
        response = _ecs().update_express_gateway_service(
            serviceArn=service_arn, primaryContainer=primary_container
        )
    except Exception as exc:
        raise _translate(exc, operation="UpdateExpressGatewayService") from exc
    target = (response.get("service") or {}).get("targetConfiguration") or {}
    return str(target.get("serviceRevisionArn", ""))


# --- classic services ------------------------------------------------------------------------


def describe_service(*, cluster: str, service: str) -> ServiceInfo:
    """The service; raises AwsNotFoundError when ECS does not know it."""
    try:
        response = _ecs().describe_services(cluster=cluster, services=[service])
    except Exception as exc:
        raise _translate(exc, operation="DescribeServices") from exc
    found = response.get("services") or []
    if not found:
        reasons = "; ".join(str(f.get("reason", "")) for f in response.get("failures") or [])
        raise AwsNotFoundError(
            f"DescribeServices found no service {service} in {cluster}",
            code="MISSING",
            operation="DescribeServices",
            detail=reasons,
        )
    raw = found[0]
    return ServiceInfo(
        arn=str(raw.get("serviceArn", "")),
        cluster_arn=str(raw.get("clusterArn", "")),
        name=str(raw.get("serviceName", "")),
        status=str(raw.get("status", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        current_deployment=str(raw.get("currentServiceDeployment", "")),
        deployment_controller=str((raw.get("deploymentController") or {}).get("type", "ECS")),
        load_balancers=tuple(
            LoadBalancerRef(
                target_group_arn=str(lb.get("targetGroupArn", "")),
                alternate_target_group_arn=str(
                    (lb.get("advancedConfiguration") or {}).get("alternateTargetGroupArn", "")
                ),
                container_name=str(lb.get("containerName", "")),
            )
            for lb in raw.get("loadBalancers") or []
            # Classic Load Balancers (loadBalancerName only) have no target group.
            if lb.get("targetGroupArn")
        ),
    )


@cache
def _registration_members() -> frozenset[str]:
    """What RegisterTaskDefinition accepts, from the pinned service model."""
    model = _ecs().meta.service_model.operation_model("RegisterTaskDefinition")
    return frozenset(model.input_shape.members)


def describe_task_definition(*, task_definition: str) -> TaskDefinitionInfo:
    try:
        response = _ecs().describe_task_definition(taskDefinition=task_definition)
    except Exception as exc:
        raise _translate(exc, operation="DescribeTaskDefinition") from exc
    raw = dict(response.get("taskDefinition") or {})
    members = _registration_members()
    return TaskDefinitionInfo(
        arn=str(raw.get("taskDefinitionArn", "")),
        registered_at=raw.get("registeredAt"),
        registration={k: v for k, v in raw.items() if k in members},
    )


def register_task_definition(*, registration: dict[str, Any]) -> str:
    """Register a revision of the task definition's family; return its ARN."""
    try:
        response = _ecs().register_task_definition(**registration)
    except Exception as exc:
        raise _translate(exc, operation="RegisterTaskDefinition") from exc
    return str((response.get("taskDefinition") or {}).get("taskDefinitionArn", ""))


def update_service(*, cluster: str, service: str, task_definition: str) -> str:
    """Deploy ``task_definition`` to the service with its own deployment
    configuration (strategy, circuit breaker, alarms). Return the service
    deployment's ARN when ECS names it in the answer, else ''."""
    try:
        response = _ecs().update_service(
            cluster=cluster, service=service, taskDefinition=task_definition
        )
    except Exception as exc:
        raise _translate(exc, operation="UpdateService") from exc
    return str((response.get("service") or {}).get("currentServiceDeployment", ""))


# --- service deployments (both kinds) ---------------------------------------------------------


def list_service_deployments(
    *,
    cluster: str,
    service: str,
    statuses: tuple[str, ...] = (),
    created_after: dt.datetime | None = None,
    max_results: int = 20,
) -> list[DeploymentBrief]:
    """The service's deployments, newest first (one page)."""
    kwargs: dict[str, Any] = {"cluster": cluster, "service": service, "maxResults": max_results}
    if statuses:
        kwargs["status"] = list(statuses)
    if created_after is not None:
        kwargs["createdAt"] = {"after": created_after}
    try:
        response = _ecs().list_service_deployments(**kwargs)
    except Exception as exc:
        raise _translate(exc, operation="ListServiceDeployments") from exc
    briefs = [
        DeploymentBrief(
            arn=str(item.get("serviceDeploymentArn", "")),
            status=str(item.get("status", "")),
            target_revision_arn=str(item.get("targetServiceRevisionArn", "")),
            created_at=item.get("createdAt"),
            started_at=item.get("startedAt"),
            finished_at=item.get("finishedAt"),
            status_reason=str(item.get("statusReason", "")),
        )
        for item in response.get("serviceDeployments") or []
    ]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    briefs.sort(key=lambda b: b.created_at or epoch, reverse=True)
    return briefs


def describe_service_deployment(*, deployment_arn: str) -> ServiceDeploymentInfo | None:
    """The service deployment, or None when ECS no longer knows it (it keeps
    90 days of them)."""
    try:
        response = _ecs().describe_service_deployments(serviceDeploymentArns=[deployment_arn])
    except Exception as exc:
        error = _translate(exc, operation="DescribeServiceDeployments")
        if error.code == "ServiceDeploymentNotFoundException":
            return None
        raise error from exc
    for raw in response.get("serviceDeployments") or []:
        if raw.get("serviceDeploymentArn") == deployment_arn:
            return _service_deployment(raw)
    return None


def describe_service_revisions(*, revision_arns: list[str]) -> list[ServiceRevisionInfo]:
    """The named service revisions ECS knows (at most 20 per call)."""
    if not revision_arns:
        return []
    try:
        response = _ecs().describe_service_revisions(serviceRevisionArns=revision_arns[:20])
    except Exception as exc:
        raise _translate(exc, operation="DescribeServiceRevisions") from exc
    return [_service_revision(raw) for raw in response.get("serviceRevisions") or []]


def _service_revision(raw: dict[str, Any]) -> ServiceRevisionInfo:
    balancers: list[str] = []
    groups: list[str] = []
    for path in (raw.get("ecsManagedResources") or {}).get("ingressPaths") or []:
        arn = (path.get("loadBalancer") or {}).get("arn")
        if arn:
            balancers.append(str(arn))
        groups += [str(g["arn"]) for g in path.get("targetGroups") or [] if g.get("arn")]
    return ServiceRevisionInfo(
        arn=str(raw.get("serviceRevisionArn", "")),
        task_definition=str(raw.get("taskDefinition", "")),
        created_at=raw.get("createdAt"),
        managed_load_balancer_arns=tuple(dict.fromkeys(balancers)),
        managed_target_group_arns=tuple(dict.fromkeys(groups)),
    )


def stop_service_deployment(*, deployment_arn: str) -> None:
    """Ask ECS to stop the deployment and roll back to the previous revision
    (``stopType=ROLLBACK``, which works even when the service's deployment
    configuration has no rollback). Raises AwsConflictError when the
    deployment can no longer be stopped (it has ended)."""
    try:
        _ecs().stop_service_deployment(serviceDeploymentArn=deployment_arn, stopType="ROLLBACK")
    except Exception as exc:
        raise _translate(exc, operation="StopServiceDeployment") from exc
