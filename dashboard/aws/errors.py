"""The dashboard's own AWS errors: permanent ones and transient ones.

Callers retry only :class:`AwsTransientError`; everything else is reported to
the user as is.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
)

# Error codes that mean "try again later" across the services we call.
_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceErrorException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
}


class AwsError(Exception):
    """An AWS call failed. ``code`` is AWS's error code, when there is one."""

    transient = False

    def __init__(self, message: str, *, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation


class AwsTransientError(AwsError):
    """Worth retrying: throttling, 5xx, timeouts, connection failures."""

    transient = True


class AwsNotFoundError(AwsError):
    """The named resource does not exist."""


class AwsConflictError(AwsError):
    """The resource is in a state that forbids the call (e.g. an operation in progress)."""


def translate(exc: Exception, *, operation: str) -> AwsError:
    """Map a botocore exception to the project's error type (never raises)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{operation} failed: {code}: {message}"
        if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            return AwsTransientError(text, code=code, operation=operation)
        if code in {
            "NoSuchKey",
            "NoSuchBucket",
            "NoSuchVersion",
            "NotFound",
            "404",
            "ParameterNotFound",
            "ParameterVersionNotFound",
            "ResourceNotFoundException",
            "ResourceNotFound",  # CloudWatch (SetAlarmState of an unknown alarm)
            "NoSuchUpload",
        }:
            return AwsNotFoundError(text, code=code, operation=operation)
        if code in {"InvalidStateException", "ConflictException"}:
            return AwsConflictError(text, code=code, operation=operation)
        return AwsError(text, code=code, operation=operation)
    if isinstance(exc, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return AwsTransientError(f"{operation} failed: {exc}", operation=operation)
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{operation} failed: {exc}", operation=operation)
    return AwsError(f"{operation} failed: {exc}", operation=operation)
