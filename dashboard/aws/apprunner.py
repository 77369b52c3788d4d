"""AWS App Runner: the services that run the inference containers."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsConflictError, AwsError, translate

if TYPE_CHECKING:
    from mypy_boto3_apprunner import AppRunnerClient

# Operation states in which App Runner is still working.
OPERATION_ACTIVE = {"PENDING", "IN_PROGRESS", "ROLLBACK_IN_PROGRESS"}

# StartDeployment's model lists no InvalidStateException: App Runner answers a
# service that is busy with another operation with InvalidRequestException and
# a message naming the state. Those mean "wait", not "refused".
_BUSY_MESSAGE = re.compile(r"OPERATION_IN_PROGRESS|in progress|current state", re.IGNORECASE)


def _apprunner() -> AppRunnerClient:
    return cast("AppRunnerClient", client("apprunner"))


def _translate(exc: Exception, *, operation: str) -> AwsError:
    error = translate(exc, operation=operation)
    if error.code == "InvalidRequestException" and _BUSY_MESSAGE.search(error.detail):
        busy = AwsConflictError(
            str(error), code=error.code, operation=operation, detail=error.detail
        )
        busy.error_id = error.error_id
        return busy
    return error


@dataclass(frozen=True)
class ServiceInfo:
    arn: str
    name: str
    url: str  # a bare domain, as App Runner reports it (no scheme)
    status: str
    id: str = ""
    # DescribeService only: the parts of the configuration UpdateService takes.
    source_configuration: dict[str, Any] = field(default_factory=dict)
    health_check: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return self.status == "OPERATION_IN_PROGRESS"

    def environment_variables(self) -> dict[str, str]:
        """The runtime environment variables of the service's current revision."""
        source = self.source_configuration
        image = source.get("ImageRepository") or {}
        if image:
            variables = (image.get("ImageConfiguration") or {}).get("RuntimeEnvironmentVariables")
        else:
            code = (source.get("CodeRepository") or {}).get("CodeConfiguration") or {}
            variables = (code.get("CodeConfigurationValues") or {}).get(
                "RuntimeEnvironmentVariables"
            )
        return dict(variables or {})

    def environment_secrets(self) -> dict[str, str]:
        source = self.source_configuration
        image = source.get("ImageRepository") or {}
        if image:
            secrets = (image.get("ImageConfiguration") or {}).get("RuntimeEnvironmentSecrets")
        else:
            code = (source.get("CodeRepository") or {}).get("CodeConfiguration") or {}
            secrets = (code.get("CodeConfigurationValues") or {}).get("RuntimeEnvironmentSecrets")
        return dict(secrets or {})


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
        id=str(raw.get("ServiceId", "")),
        source_configuration=dict(raw.get("SourceConfiguration") or {}),
        health_check=dict(raw.get("HealthCheckConfiguration") or {}),
    )


def _operation(item: Any) -> OperationInfo:
    return OperationInfo(
        id=str(item.get("Id", "")),
        type=str(item.get("Type", "")),
        status=str(item.get("Status", "")),
        started_at=item.get("StartedAt"),
        ended_at=item.get("EndedAt"),
    )


def update_service(
    *,
    service_arn: str,
    source_configuration: dict[str, Any],
    health_check: dict[str, Any] | None = None,
) -> str:
    """Replace the service's source configuration (and health check): App
    Runner deploys a new revision with it, rolling back by itself if the new
    instances never become healthy. Return the operation id.

    Raises AwsConflictError while the service is busy with another operation.
    """
    kwargs: dict[str, Any] = {
        "ServiceArn": service_arn,
        "SourceConfiguration": source_configuration,
    }
    if health_check:
        kwargs["HealthCheckConfiguration"] = health_check
    try:
        response = _apprunner().update_service(**kwargs)
    except Exception as exc:
        raise _translate(exc, operation="UpdateService") from exc
    return str(response["OperationId"])


def describe_service(*, service_arn: str) -> ServiceInfo:
    try:
        response = _apprunner().describe_service(ServiceArn=service_arn)
    except Exception as exc:
        raise _translate(exc, operation="DescribeService") from exc
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
        raise _translate(exc, operation="ListServices") from exc


def list_operations(*, service_arn: str, max_results: int = 20) -> list[OperationInfo]:
    """The service's most recent operations, newest first (one page)."""
    try:
        response = _apprunner().list_operations(ServiceArn=service_arn, MaxResults=max_results)
    except Exception as exc:
        raise _translate(exc, operation="ListOperations") from exc
    return [_operation(item) for item in response.get("OperationSummaryList", [])]


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
                    return _operation(item)
            token = response.get("NextToken")
            if not token:
                return None
    except Exception as exc:
        raise _translate(exc, operation="ListOperations") from exc
