"""App Runner as a deploy target (the local stand-in speaks the same API).

A deployment is ``UpdateService`` with the service's full current source
configuration and health check, only ``MODEL_SSM_PARAMETER`` changed to the
pinned pointer version: App Runner starts instances of the new revision, moves
the traffic once they pass the health check (``/readyz``: the model is loaded
and verified), and rolls back to the previous revision by itself when they
never do.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dashboard.aws import apprunner
from dashboard.aws.errors import AwsConflictError, AwsError, AwsNotFoundError
from dashboard.deployments.targets.base import (
    OperationState,
    Phase,
    Revision,
    TargetBusy,
    TargetError,
)

PIN_VARIABLE = "MODEL_SSM_PARAMETER"

_PHASES = {
    "PENDING": Phase.RUNNING,
    "IN_PROGRESS": Phase.RUNNING,
    "ROLLBACK_IN_PROGRESS": Phase.RUNNING,
    "SUCCEEDED": Phase.SUCCEEDED,
    "ROLLBACK_SUCCEEDED": Phase.ROLLED_BACK,
    "FAILED": Phase.FAILED,
    "ROLLBACK_FAILED": Phase.FAILED,
}
# The operation types that deploy a new revision.
_DEPLOYING = {"UPDATE_SERVICE", "START_DEPLOYMENT"}


class AppRunnerTarget:
    label = "App Runner"
    operation_label = "App Runner operation"

    def __init__(self, *, service_arn: str) -> None:
        self.service_arn = service_arn

    def describe(self) -> Revision:
        service = self._describe()
        return Revision(
            pin=service.environment_variables().get(PIN_VARIABLE),
            busy=service.busy,
            url=f"https://{service.url}" if service.url else "",
        )

    def start(self, *, pin: str) -> str:
        service = self._describe()
        if service.busy:
            raise TargetBusy(f"the App Runner service is {service.status}")
        source = _pinned_source(service, pin)
        try:
            return apprunner.update_service(
                service_arn=self.service_arn,
                source_configuration=source,
                health_check=service.health_check or None,
            )
        except AwsConflictError as exc:
            raise TargetBusy(str(exc)) from exc
        except AwsError as exc:
            if exc.transient:
                raise
            raise TargetError(f"App Runner refused the update: {exc}") from exc

    def find_started(self, *, since: dt.datetime) -> str | None:
        for operation in apprunner.list_operations(service_arn=self.service_arn):
            if (
                operation.type in _DEPLOYING
                and operation.started_at is not None
                and operation.started_at >= since
            ):
                return operation.id
        return None

    def poll(self, *, operation_id: str) -> OperationState | None:
        operation = apprunner.get_operation(service_arn=self.service_arn, operation_id=operation_id)
        if operation is None:
            return None
        return OperationState(
            phase=_PHASES.get(operation.status, Phase.RUNNING),
            status=operation.status,
            started_at=operation.started_at,
            ended_at=operation.ended_at,
        )

    def stop(self, *, operation_id: str) -> bool:
        return False  # App Runner has no call to stop an operation

    def _describe(self) -> apprunner.ServiceInfo:
        try:
            return apprunner.describe_service(service_arn=self.service_arn)
        except AwsNotFoundError as exc:
            raise TargetError(f"the App Runner service {self.service_arn} does not exist") from exc


def _pinned_source(service: apprunner.ServiceInfo, pin: str) -> dict[str, Any]:
    """The service's source configuration as UpdateService takes it, with the
    pointer pinned. Raises TargetError when the service cannot be pinned."""
    source = service.source_configuration
    secrets = service.environment_secrets()
    if "MODEL_POINTER" in secrets:
        raise TargetError(
            "the service injects MODEL_POINTER from a secret, which cannot be pinned to a "
            f"pointer version; configure {PIN_VARIABLE} instead (docs/deploy-aws.md)"
        )
    variables = service.environment_variables()
    if PIN_VARIABLE not in variables:
        raise TargetError(
            f"the App Runner service has no {PIN_VARIABLE} environment variable, so it "
            "does not read the pointer"
        )
    variables[PIN_VARIABLE] = pin
    pinned: dict[str, Any] = {}
    image = source.get("ImageRepository")
    if image:
        configuration = dict(image.get("ImageConfiguration") or {})
        configuration["RuntimeEnvironmentVariables"] = variables
        pinned["ImageRepository"] = {
            key: value
            for key, value in {
                **image,
                "ImageConfiguration": configuration,
            }.items()
            if key in {"ImageIdentifier", "ImageConfiguration", "ImageRepositoryType"}
        }
    else:
        code = dict(source.get("CodeRepository") or {})
        code_configuration = dict(code.get("CodeConfiguration") or {})
        values = dict(code_configuration.get("CodeConfigurationValues") or {})
        values["RuntimeEnvironmentVariables"] = variables
        code_configuration["CodeConfigurationValues"] = values
        code["CodeConfiguration"] = code_configuration
        pinned["CodeRepository"] = code
    for key in ("AutoDeploymentsEnabled", "AuthenticationConfiguration"):
        if key in source:
            pinned[key] = source[key]
    return pinned
