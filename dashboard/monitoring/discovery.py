"""Where an environment's metrics and logs are: read from its service ARN
(App Runner: the ARN says everything) or asked of ECS and Elastic Load
Balancing (ECS), and reused briefly.

ECS, per kind of service:

- **classic** (``ecs``): DescribeServices gives the task definition and the
  ``loadBalancers`` (target group, and the alternate one of a blue/green
  service); DescribeTargetGroups gives each target group's load balancer;
  DescribeTaskDefinition gives the inference container's ``logConfiguration``
  (awslogs: ``awslogs-group``, ``awslogs-stream-prefix``).
- **Express Mode** (``ecs_express``): DescribeExpressGatewayService gives the
  primary container's ``awsLogsConfiguration`` and the active service
  revisions; DescribeServiceRevisions reports what ECS provisioned for them
  (``ecsManagedResources.ingressPaths``: the load balancer and target groups,
  by ARN, so no ELB call). DescribeExpressGatewayService itself reports no
  load balancer. A revision that reports none falls back to the classic path.

Four calls at most, once per ``DISCOVERY_SECONDS`` per environment (the
answer is cached in Redis with the metrics); a failure to find the load
balancer leaves the request charts out with a note instead of failing the page.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from django.core.cache import cache

from dashboard.aws import ecs, elbv2
from dashboard.aws.errors import AwsError, AwsNotFoundError
from dashboard.deployments.models import Environment
from dashboard.deployments.targets.ecs import PIN_VARIABLE
from dashboard.monitoring import catalog
from dashboard.monitoring.catalog import LogLayout, MonitoredService, NotAServiceArn
from dashboard.monitoring.shared import shared_answer

logger = logging.getLogger(__name__)

DISCOVERY_SECONDS = 120
# After a failure to read part of it, look again sooner.
DISCOVERY_RETRY_SECONDS = 15


def _key(environment: Environment) -> str:
    digest = hashlib.sha256(f"{environment.target}|{environment.service_arn}".encode()).hexdigest()[
        :24
    ]
    return f"monitoring:service:v1:{environment.pk}:{digest}"


def monitored_service(*, environment: Environment) -> MonitoredService:
    """The environment's service as the monitoring pages see it.

    Raises NotAServiceArn (no service to monitor: the message says why) and
    AwsError (ECS did not answer).
    """
    if environment.target == Environment.Target.APPRUNNER:
        return catalog.apprunner_service(catalog.service_identity(environment.service_arn))
    if environment.target not in (Environment.Target.ECS, Environment.Target.ECS_EXPRESS):
        raise NotAServiceArn(f"the deploy target {environment.target!r} has no monitoring")
    key = _key(environment)

    partial: list[bool] = []

    def compute() -> MonitoredService:
        service, complete = _ecs_service(environment)
        if not complete:
            partial.append(True)
        return service

    # Concurrent misses (many open pages) wait for one lookup instead of each
    # asking ECS.
    found, _cached = shared_answer(key, DISCOVERY_SECONDS, compute)
    if partial:
        with contextlib.suppress(Exception):  # part of it failed: look again sooner
            cache.set(key, found, DISCOVERY_RETRY_SECONDS)
    if not isinstance(found, MonitoredService):  # a stale shape from another version
        monitored_service_forget(environment=environment)
        return _ecs_service(environment)[0]
    return found


def monitored_service_forget(*, environment: Environment) -> None:
    with contextlib.suppress(Exception):
        cache.delete(_key(environment))


def _ecs_service(environment: Environment) -> tuple[MonitoredService, bool]:
    """The service, and whether everything could be read."""
    arn = environment.service_arn
    try:
        cluster, name = ecs.service_arn_parts(arn or "")
    except ValueError as exc:
        raise NotAServiceArn(
            f"{arn!r} is not an ECS service ARN "
            "(arn:aws:ecs:<region>:<account>:service/<cluster>/<name>)"
        ) from exc
    express = environment.target == Environment.Target.ECS_EXPRESS
    notes: list[str] = []
    complete = True
    try:
        if express:
            logs, logs_problem, target_groups = _express(arn, cluster)
        else:
            logs, logs_problem, target_groups = _classic(arn, cluster)
    except AwsNotFoundError as exc:
        raise NotAServiceArn(f"ECS does not know the service {arn}: {exc}") from exc
    pairs: list[tuple[str, str]] = []
    if isinstance(target_groups, AwsError):
        complete = False
        notes.append(
            "The service's load balancer could not be read, so the request, status, "
            f"latency and task charts are missing: {target_groups}"
        )
    else:
        pairs = [(tg, lb) for tg, lb in target_groups if _alb_pair(tg, lb)]
        if not pairs:
            notes.append(
                "This ECS service has no Application Load Balancer target group, so there "
                "are no request, status or latency charts (they come from the load balancer)."
            )
    service = catalog.ecs_service(
        cluster=cluster,
        service=name,
        target_groups=pairs,
        logs=logs,
        logs_problem=logs_problem,
        notes=tuple(notes),
        express=express,
    )
    return service, complete


def _alb_pair(target_group: str, load_balancer: str) -> bool:
    try:
        catalog.target_group_dimension(target_group)
        catalog.load_balancer_dimension(load_balancer)
    except ValueError:
        return False  # a Network Load Balancer's, or unattached: no ALB metrics
    return True


TargetGroups = list[tuple[str, str]] | AwsError


def _classic(arn: str, cluster: str) -> tuple[LogLayout | None, str, TargetGroups]:
    service = ecs.describe_service(cluster=cluster, service=arn)
    definition = ecs.describe_task_definition(task_definition=service.task_definition)
    lb_containers = [lb.container_name for lb in service.load_balancers]
    logs, problem = _task_definition_logs(definition.containers, lb_containers)
    return logs, problem, _load_balancers_of(service)


def _load_balancers_of(service: ecs.ServiceInfo) -> TargetGroups:
    groups: list[str] = []
    for lb in service.load_balancers:
        groups += [g for g in (lb.target_group_arn, lb.alternate_target_group_arn) if g]
    if not groups:
        return []
    try:
        found = elbv2.describe_target_groups(target_group_arns=groups)
    except AwsError as exc:
        logger.warning("monitoring: target groups of %s unreadable: %s", service.arn, exc)
        return exc
    by_arn = {tg.arn: tg for tg in found}
    pairs = []
    for group in dict.fromkeys(groups):
        info = by_arn.get(group)
        if info is not None and info.load_balancer_arns:
            pairs.append((group, info.load_balancer_arns[0]))
    return pairs


def _task_definition_logs(
    containers: list[dict[str, object]], preferred: list[str]
) -> tuple[LogLayout | None, str]:
    """The awslogs destination of the inference container: the one that reads
    the pointer, else the one behind the load balancer, else the first that
    logs with awslogs."""

    def reads_pointer(c: dict[str, object]) -> bool:
        return PIN_VARIABLE in ecs.environment_of(c)

    ordered = sorted(
        containers,
        key=lambda c: (not reads_pointer(c), c.get("name") not in preferred),
    )
    for container in ordered:
        config = container.get("logConfiguration")
        if not isinstance(config, dict) or config.get("logDriver") != "awslogs":
            continue
        options = config.get("options") or {}
        group = str(options.get("awslogs-group", ""))
        if not group:
            continue
        prefix = str(options.get("awslogs-stream-prefix", ""))
        name = str(container.get("name", ""))
        # awslogs names each stream <prefix>/<container name>/<task id>.
        stream_prefix = f"{prefix}/{name}/" if prefix and name else None
        return LogLayout(application_group=group, application_prefix=stream_prefix), ""
    return None, (
        "the service's task definition sends no container's logs to CloudWatch Logs "
        "(no awslogs logConfiguration with an awslogs-group)"
    )


def _express(arn: str, cluster: str) -> tuple[LogLayout | None, str, TargetGroups]:
    service = ecs.describe_express_service(service_arn=arn)
    newest = service.newest()
    logs: LogLayout | None = None
    problem = "the Express service reports no awsLogsConfiguration"
    if newest is not None and newest.log_group:
        prefix = newest.log_stream_prefix
        logs = LogLayout(
            application_group=newest.log_group,
            # <prefix>/<container name>/<task id>; Express names the container itself.
            application_prefix=f"{prefix}/" if prefix else None,
        )
        problem = ""
    revisions = [c.revision_arn for c in service.configurations if c.revision_arn]
    try:
        found = ecs.describe_service_revisions(revision_arns=revisions)
    except AwsError as exc:
        return logs, problem, exc
    pairs: list[tuple[str, str]] = []
    for revision in found:
        balancer = next(iter(revision.managed_load_balancer_arns), "")
        pairs += [(tg, balancer) for tg in revision.managed_target_group_arns if balancer]
    if pairs:
        return logs, problem, list(dict.fromkeys(pairs))
    # No managed resources reported: read it as any ECS service.
    try:
        classic = ecs.describe_service(cluster=cluster, service=arn)
    except AwsError as exc:
        return logs, problem, exc
    return logs, problem, _load_balancers_of(classic)
