"""The dashboard's own AWS errors: permanent ones and transient ones.

Callers retry only :class:`AwsTransientError`. What AWS says about a failure
(its message) often names ARNs, account ids, role and user names: it goes to
the log with an error id, and ``str()`` of the error is only the operation,
AWS's error code and that id, safe to show anyone. ``detail`` keeps AWS's
words for admins and logs.
"""

from __future__ import annotations

import logging
import secrets

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


logger = logging.getLogger(__name__)


class AwsError(Exception):
    """An AWS call failed. ``code`` is AWS's error code, when there is one;
    ``detail`` is what AWS or botocore said (never shown to viewers);
    ``error_id`` ties the message a person sees to the log line."""

    transient = False

    def __init__(
        self, message: str, *, code: str = "", operation: str = "", detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation
        self.detail = detail
        self.error_id = ""


def _public(operation: str, what: str, error_id: str) -> str:
    return f"{operation} failed ({what}); error id {error_id}"


class AwsTransientError(AwsError):
    """Worth retrying: throttling, 5xx, timeouts, connection failures."""

    transient = True


class AwsNotFoundError(AwsError):
    """The named resource does not exist."""


_NOT_FOUND_CODES = {
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
    # ECS
    "ServiceNotFoundException",
    "ClusterNotFoundException",
    "ServiceDeploymentNotFoundException",
    # Elastic Load Balancing
    "TargetGroupNotFound",
    "LoadBalancerNotFound",
}


class AwsConflictError(AwsError):
    """The resource is in a state that forbids the call (e.g. an operation in progress)."""


class AwsAlreadyExistsError(AwsConflictError):
    """A conditional write (``If-None-Match: *``) found the key taken: S3's
    412 PreconditionFailed, or 409 ConditionalRequestConflict while another
    conditional write to the same key is under way."""


_ALREADY_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def translate(exc: Exception, *, operation: str) -> AwsError:
    """Map a botocore exception to the project's error type (never raises).

    Logs AWS's own message with a fresh error id (expected "not found"
    answers at INFO, the rest at WARNING); the returned error's text names
    only the operation, the error code and that id.
    """
    error_id = secrets.token_hex(4)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "error"
        detail = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        kind: type[AwsError] = AwsError
        if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            kind = AwsTransientError
        elif code in _NOT_FOUND_CODES:
            kind = AwsNotFoundError
        elif code in _ALREADY_EXISTS_CODES:
            kind = AwsAlreadyExistsError
        elif code in {"InvalidStateException", "ConflictException"}:
            kind = AwsConflictError
        result: AwsError = kind(
            _public(operation, code, error_id), code=code, operation=operation, detail=detail
        )
    elif isinstance(exc, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        result = AwsTransientError(
            _public(operation, "AWS did not answer", error_id),
            operation=operation,
            detail=str(exc),
        )
    else:
        what = "the request could not be made" if isinstance(exc, BotoCoreError) else "error"
        result = AwsError(_public(operation, what, error_id), operation=operation, detail=str(exc))
    result.error_id = error_id
    level = logging.INFO if isinstance(result, AwsNotFoundError) else logging.WARNING
    logger.log(
        level,
        "AWS error %s: %s failed: %s: %s",
        error_id,
        operation,
        result.code or type(exc).__name__,
        result.detail,
    )
    return result
