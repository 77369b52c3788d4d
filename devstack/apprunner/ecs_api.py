"""The stand-in's services seen as ECS Express Mode services: the few ECS
operations ModelDeck's ECS target calls, in ECS's JSON 1.1 API (botocore's
``ecs`` 2014-11-13 model), so an unmodified boto3 ``ecs`` client works.

Requests come to the App Runner API's port with ``X-Amz-Target:
AmazonEC2ContainerServiceV20141113.<Operation>`` (``AWS_ENDPOINT_URL_ECS``
points there). Each stand-in service is the Express service
``arn:aws:ecs:<region>:<account>:service/devstack/<name>``; an
``UpdateExpressGatewayService`` is the stand-in's update (a new instance,
health-checked, then all the traffic at once, or its own rollback), reported
as a service deployment. What it does not do like ECS: no canary (traffic
moves 0 % → 100 % in one step, the lifecycle stages are SCALE_UP then
CLEAN_UP), no alarms, ``cpu``/``memory``/``scalingTarget``/network/roles are
accepted and ignored, container ``secrets`` are refused, service revision
ARNs are derived from the revision's content, and the deployment history is
the App Runner operation history (a restart of the stand-in keeps it but
forgets each deployment's source revision).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ServiceModel
from starlette.requests import Request
from starlette.responses import Response

from devstack.apprunner.api import ApiError, _parse_body, _read_body, _validate
from devstack.apprunner.service import (
    ECS_CLUSTER,
    ECS_CONTAINER,
    ECS_LOG_STREAM_PREFIX,
    InvalidStateError,
    Operation,
    OperationStatus,
    OperationType,
    Revision,
    Service,
    ecs_log_group_for,
)

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "application/x-amz-json-1.1"

# App Runner operation status -> ECS service deployment status.
_STATUS = {
    OperationStatus.PENDING: "PENDING",
    OperationStatus.IN_PROGRESS: "IN_PROGRESS",
    OperationStatus.ROLLBACK_IN_PROGRESS: "ROLLBACK_IN_PROGRESS",
    OperationStatus.SUCCEEDED: "SUCCESSFUL",
    OperationStatus.ROLLBACK_SUCCEEDED: "ROLLBACK_SUCCESSFUL",
    OperationStatus.ROLLBACK_FAILED: "ROLLBACK_FAILED",
    OperationStatus.FAILED: "STOPPED",
}


@cache
def ecs_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ecs")


def target_prefix() -> str:
    return str(ecs_model().metadata["targetPrefix"])


def revision_arn(service: Service, revision: Revision) -> str:
    """A service revision ARN derived from what the revision runs."""
    content = json.dumps(
        [revision.command, sorted(revision.env.items()), revision.health_check_path],
        sort_keys=True,
    )
    number = int(hashlib.sha256(content.encode()).hexdigest()[:15], 16)
    return (
        f"arn:aws:ecs:{service.region}:{service.account_id}:service-revision/"
        f"{ECS_CLUSTER}/{service.name}/{number}"
    )


def _cluster_arn(service: Service) -> str:
    return f"arn:aws:ecs:{service.region}:{service.account_id}:cluster/{ECS_CLUSTER}"


def deployment_arn(service: Service, operation_id: str) -> str:
    return (
        f"arn:aws:ecs:{service.region}:{service.account_id}:service-deployment/"
        f"{ECS_CLUSTER}/{service.name}/{operation_id}"
    )


Handler = Callable[["EcsExpressApi", dict[str, Any]], dict[str, Any]]


class EcsExpressApi:
    """Serves the ECS operations of the ECS target for the stand-in's services."""

    def __init__(self, services: Iterable[Service]) -> None:
        self.prefix = target_prefix()
        self._services = {s.ecs_arn: s for s in services}
        # What each deployment started here moved from and to, and when each
        # revision was first seen (the stand-in itself keeps neither).
        self._moves: dict[str, tuple[str, str]] = {}
        self._revisions: dict[str, tuple[Service, Revision, float]] = {}

    async def dispatch(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            target = request.headers.get("x-amz-target") or ""
            name = target.partition(".")[2]
            handler = _HANDLERS.get(name)
            if handler is None:
                supported = ", ".join(sorted(_HANDLERS))
                raise ApiError(
                    "InvalidParameterException",
                    f"{target or 'this request'} is not supported by the local ECS stand-in "
                    f"(supported: {supported})",
                )
            params = _parse_body(await _read_body(request))
            try:
                _validate(params, ecs_model().operation_model(name))
            except ApiError as exc:
                raise ApiError("InvalidParameterException", exc.message) from exc
            result = handler(self, params)
        except ApiError as exc:
            return _error(exc, request_id)
        except Exception:
            logger.exception("ECS stand-in failed on request %s", request_id)
            return _error(
                ApiError("ServerException", "An unexpected error occurred.", 500), request_id
            )
        return Response(
            json.dumps(result), media_type=_CONTENT_TYPE, headers={"x-amzn-RequestId": request_id}
        )

    # -- lookups ----------------------------------------------------------------

    def _service(self, name_or_arn: str) -> Service:
        service = self._services.get(name_or_arn) or next(
            (s for s in self._services.values() if s.name == name_or_arn), None
        )
        if service is None:
            raise ApiError("ServiceNotFoundException", f"Service {name_or_arn} not found.")
        return service

    def _seen(self, service: Service, revision: Revision, at: float | None = None) -> str:
        arn = revision_arn(service, revision)
        if arn not in self._revisions:
            self._revisions[arn] = (service, revision, at or service.created_at)
        return arn

    def _deployment_of(self, arn: str) -> tuple[Service, Operation] | None:
        for service in self._services.values():
            prefix = deployment_arn(service, "")
            if arn.startswith(prefix):
                wanted = arn[len(prefix) :]
                for operation in service.operations():
                    if operation.id == wanted:
                        return service, operation
        return None

    # -- views ------------------------------------------------------------------------

    def _configuration(self, service: Service, revision: Revision) -> dict[str, Any]:
        arn = self._seen(service, revision)
        return {
            "serviceRevisionArn": arn,
            "cpu": "1024",
            "memory": "2048",
            "healthCheckPath": revision.health_check_path,
            "primaryContainer": {
                "image": revision.image_identifier,
                "containerPort": 8080,
                "command": list(revision.command),
                "environment": [{"name": k, "value": v} for k, v in sorted(revision.env.items())],
                "awsLogsConfiguration": {
                    "logGroup": ecs_log_group_for(service.name),
                    "logStreamPrefix": ECS_LOG_STREAM_PREFIX,
                },
            },
            "ingressPaths": [{"accessType": "PUBLIC", "endpoint": f"http://{service.url}"}],
            "createdAt": self._revisions[arn][2],
        }

    def _brief(self, service: Service, operation: Operation) -> dict[str, Any]:
        _, target = self._moves.get(operation.id, ("", self._seen(service, service.revision)))
        status = _STATUS[operation.status]
        if operation.id in service.rollback_requested and status in {"PENDING", "IN_PROGRESS"}:
            status = "ROLLBACK_REQUESTED"
        brief: dict[str, Any] = {
            "serviceDeploymentArn": deployment_arn(service, operation.id),
            "serviceArn": service.ecs_arn,
            "clusterArn": _cluster_arn(service),
            "createdAt": operation.started_at,
            "startedAt": operation.started_at,
            "targetServiceRevisionArn": target,
            "status": status,
        }
        if operation.ended_at is not None:
            brief["finishedAt"] = operation.ended_at
        return brief

    def _deployment(self, service: Service, operation: Operation) -> dict[str, Any]:
        brief = self._brief(service, operation)
        source, target = self._moves.get(operation.id, ("", brief["targetServiceRevisionArn"]))
        switched = operation.id in service.switched
        live = 100.0 if switched and operation.status == OperationStatus.SUCCEEDED else 0.0
        if switched and operation.status == OperationStatus.IN_PROGRESS:
            live = 100.0
        raw: dict[str, Any] = {
            **{k: v for k, v in brief.items() if k != "targetServiceRevisionArn"},
            "updatedAt": operation.updated_at,
            "targetServiceRevision": {
                "arn": target,
                "requestedTaskCount": 1,
                "runningTaskCount": 1 if switched else 0,
                "pendingTaskCount": 0 if switched else 1,
                "requestedProductionTrafficWeight": live,
            },
            "sourceServiceRevisions": (
                [
                    {
                        "arn": source,
                        "requestedTaskCount": 0 if switched else 1,
                        "runningTaskCount": 0 if switched else 1,
                        "pendingTaskCount": 0,
                        "requestedProductionTrafficWeight": 100.0 - live,
                    }
                ]
                if source
                else []
            ),
            "deploymentConfiguration": {"strategy": "ROLLING"},
        }
        if operation.status in {OperationStatus.PENDING, OperationStatus.IN_PROGRESS}:
            raw["lifecycleStage"] = "CLEAN_UP" if switched else "SCALE_UP"
        if operation.status in {
            OperationStatus.ROLLBACK_IN_PROGRESS,
            OperationStatus.ROLLBACK_SUCCEEDED,
            OperationStatus.ROLLBACK_FAILED,
        }:
            requested = operation.id in service.rollback_requested
            raw["rollback"] = {
                "reason": (
                    "rollback requested (StopServiceDeployment)"
                    if requested
                    else "the new task never passed its health check"
                ),
                "serviceRevisionArn": source,
            }
            if not requested:
                raw["deploymentCircuitBreaker"] = {"status": "TRIGGERED", "failureCount": 1}
        return raw

    # -- operations -----------------------------------------------------------------------

    def describe_express_gateway_service(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self._service(params["serviceArn"])
        configurations = [self._configuration(service, service.revision)]
        if service.pending_revision is not None:
            configurations.append(self._configuration(service, service.pending_revision))
        operations = service.operations()
        return {
            "service": {
                "cluster": ECS_CLUSTER,
                "serviceName": service.name,
                "serviceArn": service.ecs_arn,
                "status": {"statusCode": "ACTIVE"},
                "currentDeployment": deployment_arn(service, operations[0].id)
                if operations
                else "",
                "activeConfigurations": configurations,
                "createdAt": service.created_at,
                "updatedAt": service.updated_at,
            }
        }

    def update_express_gateway_service(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self._service(params["serviceArn"])
        current = service.revision
        container = params.get("primaryContainer")
        command, env, image = current.command, current.env, current.image_identifier
        if container is not None:
            if container.get("secrets"):
                raise ApiError(
                    "InvalidParameterException",
                    "The local ECS stand-in cannot resolve container secrets.",
                )
            env = {
                str(e.get("name")): str(e.get("value", ""))
                for e in container.get("environment") or []
            }
            if "PORT" in env:
                raise ApiError("InvalidParameterException", "environment must not set PORT.")
            if container.get("command"):
                command = tuple(str(part) for part in container["command"])
            image = str(container.get("image") or image)
        path = str(params.get("healthCheckPath") or current.health_check_path)
        revision = Revision(
            command=command, env=env, health_check_path=path, image_identifier=image
        )
        source = self._seen(service, current)
        try:
            operation = service.update(revision)
        except InvalidStateError as exc:
            raise ApiError(
                "ClientException", f"The service has a deployment in progress: {exc}"
            ) from exc
        target = self._seen(service, revision, at=time.time())
        self._moves[operation.id] = (source, target)
        return {
            "service": {
                "serviceArn": service.ecs_arn,
                "cluster": ECS_CLUSTER,
                "serviceName": service.name,
                "status": {"statusCode": "ACTIVE"},
                "targetConfiguration": self._configuration(service, revision),
                "createdAt": service.created_at,
                "updatedAt": service.updated_at,
            }
        }

    def list_service_deployments(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self._service(params["service"])
        wanted = set(params.get("status") or [])
        window = params.get("createdAt") or {}
        after, before = window.get("after"), window.get("before")
        briefs = []
        for operation in service.operations():
            if operation.type not in {OperationType.UPDATE_SERVICE, OperationType.CREATE_SERVICE}:
                continue
            brief = self._brief(service, operation)
            if wanted and brief["status"] not in wanted:
                continue
            if after is not None and operation.started_at < float(after):
                continue
            if before is not None and operation.started_at > float(before):
                continue
            briefs.append(brief)
        limit = int(params.get("maxResults") or 20)
        return {"serviceDeployments": briefs[:limit]}

    def describe_service_deployments(self, params: dict[str, Any]) -> dict[str, Any]:
        found, failures = [], []
        for arn in params["serviceDeploymentArns"]:
            match = self._deployment_of(arn)
            if match is None:
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                found.append(self._deployment(*match))
        return {"serviceDeployments": found, "failures": failures}

    def describe_service_revisions(self, params: dict[str, Any]) -> dict[str, Any]:
        for service in self._services.values():
            self._seen(service, service.revision)
        found, failures = [], []
        for arn in params["serviceRevisionArns"]:
            known = self._revisions.get(arn)
            if known is None:
                failures.append({"arn": arn, "reason": "MISSING"})
                continue
            service, revision, created = known
            found.append(
                {
                    "serviceRevisionArn": arn,
                    "serviceArn": service.ecs_arn,
                    "clusterArn": _cluster_arn(service),
                    "containerImages": [
                        {"containerName": ECS_CONTAINER, "image": revision.image_identifier}
                    ],
                    "createdAt": created,
                    "ecsManagedResources": _managed_resources(service, created),
                }
            )
        return {"serviceRevisions": found, "failures": failures}

    def stop_service_deployment(self, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["serviceDeploymentArn"]
        if params.get("stopType", "ROLLBACK") != "ROLLBACK":
            raise ApiError(
                "InvalidParameterException",
                "The local ECS stand-in supports stopType ROLLBACK only.",
            )
        match = self._deployment_of(arn)
        if match is None:
            raise ApiError("ServiceDeploymentNotFoundException", f"{arn} not found.")
        service, operation = match
        try:
            service.roll_back(operation.id)
        except InvalidStateError as exc:
            raise ApiError("ConflictException", str(exc), 409) from exc
        return {"serviceDeploymentArn": arn}


_HANDLERS: dict[str, Handler] = {
    "DescribeExpressGatewayService": EcsExpressApi.describe_express_gateway_service,
    "UpdateExpressGatewayService": EcsExpressApi.update_express_gateway_service,
    "ListServiceDeployments": EcsExpressApi.list_service_deployments,
    "DescribeServiceDeployments": EcsExpressApi.describe_service_deployments,
    "DescribeServiceRevisions": EcsExpressApi.describe_service_revisions,
    "StopServiceDeployment": EcsExpressApi.stop_service_deployment,
}


def _managed_resources(service: Service, at: float) -> dict[str, Any]:
    """The load balancer and target group an Express revision reports (the
    stand-in's proxy is both; the CloudWatch shipper publishes their metrics
    under these names when it runs with ``ecs=True``)."""
    return {
        "ingressPaths": [
            {
                "accessType": "PUBLIC",
                "endpoint": service.url,
                "loadBalancer": {
                    "arn": service.ecs_load_balancer,
                    "status": "ACTIVE",
                    "updatedAt": at,
                    "scheme": "internet-facing",
                },
                "targetGroups": [
                    {
                        "arn": service.ecs_target_group,
                        "status": "ACTIVE",
                        "updatedAt": at,
                        "healthCheckPath": service.revision.health_check_path,
                        "healthCheckPort": 8080,
                        "port": 8080,
                    }
                ],
            }
        ]
    }


def _error(error: ApiError, request_id: str) -> Response:
    return Response(
        json.dumps({"__type": error.code, "message": error.message}),
        status_code=error.status,
        media_type=_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )
