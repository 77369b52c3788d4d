"""AWS App Runner: the services that run the inference containers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import translate

if TYPE_CHECKING:
    from mypy_boto3_apprunner import AppRunnerClient

# Operation states in which App Runner is still working.
OPERATION_ACTIVE = {"PENDING", "IN_PROGRESS", "ROLLBACK_IN_PROGRESS"}


def _apprunner() -> AppRunnerClient:
    return cast("AppRunnerClient", client("apprunner"))


@dataclass(frozen=True)
class ServiceInfo:
    arn: str
    name: str
    url: str  # a bare domain, as App Runner reports it (no scheme)
    status: str


@dataclass(frozen=True)
class OperationInfo:
    id: str
    type: str
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.status in OPERATION_ACTIVE


def _service(raw: Any) -> ServiceInfo:
    return ServiceInfo(
        arn=str(raw["ServiceArn"]),
        name=str(raw["ServiceName"]),
        url=str(raw.get("ServiceUrl", "")),
        status=str(raw.get("Status", "")),
    )


def start_deployment(*, service_arn: str) -> str:
    """Start a deployment of the service's configured source; return the operation id.

    Raises AwsConflictError while another operation is in progress.
    """
    try:
        response = _apprunner().start_deployment(ServiceArn=service_arn)
    except Exception as exc:
        raise translate(exc, operation="StartDeployment") from exc
    return response["OperationId"]


def describe_service(*, service_arn: str) -> ServiceInfo:
    try:
        response = _apprunner().describe_service(ServiceArn=service_arn)
    except Exception as exc:
        raise translate(exc, operation="DescribeService") from exc
    return _service(response["Service"])


def list_services() -> list[ServiceInfo]:
    """Every App Runner service of the account/region (all pages)."""
    services: list[ServiceInfo] = []
    token: str | None = None
    try:
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 20}
            if token:
                kwargs["NextToken"] = token
            response = _apprunner().list_services(**kwargs)
            for summary in response.get("ServiceSummaryList", []):
                services.append(_service(summary))
            token = response.get("NextToken")
            if not token:
                return services
    except Exception as exc:
        raise translate(exc, operation="ListServices") from exc


def list_operations(*, service_arn: str, max_results: int = 20) -> list[OperationInfo]:
    """The service's most recent operations, newest first (one page)."""
    try:
        response = _apprunner().list_operations(ServiceArn=service_arn, MaxResults=max_results)
    except Exception as exc:
        raise translate(exc, operation="ListOperations") from exc
    return [
        OperationInfo(
            id=str(item.get("Id", "")),
            type=str(item.get("Type", "")),
            status=str(item.get("Status", "")),
            started_at=item.get("StartedAt"),
            ended_at=item.get("EndedAt"),
        )
        for item in response.get("OperationSummaryList", [])
    ]


def get_operation(*, service_arn: str, operation_id: str) -> OperationInfo | None:
    """Return the service's operation ``operation_id``, or None if App Runner
    does not list it (it keeps a bounded history, newest first)."""
    token: str | None = None
    try:
        while True:
            kwargs: dict[str, Any] = {"ServiceArn": service_arn, "MaxResults": 20}
            if token:
                kwargs["NextToken"] = token
            response = _apprunner().list_operations(**kwargs)
            for item in response.get("OperationSummaryList", []):
                if item.get("Id") == operation_id:
                    return OperationInfo(
                        id=operation_id,
                        type=str(item.get("Type", "")),
                        status=str(item.get("Status", "")),
                        started_at=item.get("StartedAt"),
                        ended_at=item.get("EndedAt"),
                    )
            token = response.get("NextToken")
            if not token:
                return None
    except Exception as exc:
        raise translate(exc, operation="ListOperations") from exc
