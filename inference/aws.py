"""Thin S3 and SSM access for startup: clients, error translation, bounded retries.

Only this module and :mod:`inference.download` touch boto3. Every AWS failure
leaves here as either :class:`TransientError` (worth retrying) or
:class:`StartupFailure` (permanent, with a cause code and one readable line).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from inference.config import Settings
from inference.errors import StartupFailure, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
    ConnectionError,
    TimeoutError,
)
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "NotFound"})


class Stopped(Exception):
    """Startup was abandoned because the process is shutting down."""


def _config(settings: Settings, *, pool: int) -> Config:
    return Config(
        region_name=settings.aws_region,
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=pool,
        retries={"mode": "standard", "max_attempts": 4},
    )


def s3_client(settings: Settings) -> S3Client:
    """Return an S3 client sized for the parallel download, honouring AWS_ENDPOINT_URL."""
    # A private Session: boto3's default session is not safe to build clients from
    # concurrently, and tests may build several services in one process.
    session = boto3.session.Session(region_name=settings.aws_region)
    return session.client(
        "s3",
        endpoint_url=settings.aws_endpoint_url,
        config=_config(settings, pool=settings.download_concurrency + 2),
    )


def ssm_client(settings: Settings) -> SSMClient:
    """Return an SSM client honouring AWS_REGION and AWS_ENDPOINT_URL."""
    session = boto3.session.Session(region_name=settings.aws_region)
    return session.client(
        "ssm", endpoint_url=settings.aws_endpoint_url, config=_config(settings, pool=2)
    )


def translate_error(exc: Exception, *, what: str, not_found: str) -> Exception:
    """Return the TransientError or StartupFailure that ``exc`` (raised doing ``what``) means.

    ``not_found`` is the cause code used when AWS says the thing does not exist.
    Anything unrecognised is returned unchanged so that bugs are not disguised.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{what}: {code or status} {error.get('Message', '')}".rstrip()
        if status >= 500 or status == 429 or code in _THROTTLING_CODES:
            return TransientError(detail)
        if code in _NOT_FOUND_CODES or code.endswith("NotFound") or status == 404:
            return StartupFailure(not_found, detail)
        if code == "InvalidObjectState":
            # A 403 too, but no permission fixes it: the object is in an archive tier.
            return StartupFailure(
                "object_archived", f"{detail} (restore the object or copy it to a readable class)"
            )
        if code == "InvalidKeyId":
            return StartupFailure("kms_key_invalid", detail)
        if status == 403 or "AccessDenied" in code:
            return StartupFailure("access_denied", detail)
        return StartupFailure("aws_error", detail)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StartupFailure("aws_credentials", f"{what}: {exc}")
    if isinstance(exc, _TRANSIENT_NETWORK_ERRORS):
        return TransientError(f"{what}: {exc}")
    if isinstance(exc, BotoCoreError):
        return StartupFailure("aws_error", f"{what}: {exc}")
    return exc


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter around calls that raise TransientError.

    botocore's standard mode already retries throttling and 5xx inside one call;
    this outer loop covers what it does not: a body stream that breaks mid-read
    and an endpoint that stays unreachable for longer than botocore's budget.
    """

    attempts: int
    base_seconds: float
    max_seconds: float
    stop: threading.Event

    @classmethod
    def from_settings(cls, settings: Settings, stop: threading.Event) -> RetryPolicy:
        """Return the policy the settings describe, cancelled by ``stop``."""
        return cls(
            attempts=settings.startup_retries + 1,
            base_seconds=settings.startup_retry_base_seconds,
            max_seconds=settings.startup_retry_max_seconds,
            stop=stop,
        )

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """Return ``fn()``, retrying TransientError; raise StartupFailure once attempts run out.

        Raises Stopped when the stop event is set while waiting to retry.
        """
        for attempt in range(1, self.attempts + 1):
            if self.stop.is_set():
                raise Stopped()
            try:
                return fn()
            except TransientError as exc:
                if attempt >= self.attempts:
                    raise StartupFailure(
                        "aws_unavailable", f"{exc} (gave up after {attempt} attempts)"
                    ) from exc
                delay = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                logger.warning(
                    "transient AWS error, retrying in %.2fs: %s",
                    delay,
                    exc,
                    extra={"event": "aws_retry", "attempt": attempt, "what": what},
                )
                if self.stop.wait(delay):
                    raise Stopped() from exc
        raise AssertionError("unreachable")  # pragma: no cover


def read_parameter(client: SSMClient, name: str, policy: RetryPolicy) -> str:
    """Return the value of SSM parameter ``name`` (decrypted if it is a SecureString)."""

    def attempt() -> str:
        try:
            response = client.get_parameter(Name=name, WithDecryption=True)
        except Exception as exc:
            translated = translate_error(
                exc, what=f"reading SSM parameter {name}", not_found="parameter_not_found"
            )
            if translated is exc:
                raise
            raise translated from exc
        return response["Parameter"].get("Value", "")

    return policy.call(attempt, what=f"ssm:GetParameter {name}")
