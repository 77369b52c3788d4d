"""One boto3 client per service, built once per process with explicit limits.

boto3 reads ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` from the
environment itself, which is how the local stack points these clients at the
embedded AWS and the App Runner stand-in.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.utils import parse_timestamp
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: boto3.session.Session | None = None
_utc_session: boto3.session.Session | None = None
# Services whose answers carry thousands of timestamps (a GetMetricData answer
# has one per data point): their client parses them straight to UTC. botocore's
# default converts each to the local zone through dateutil, about 50 us apiece,
# which made a week of charts spend a second in parsing alone.
_UTC_TIMESTAMP_SERVICES = {"cloudwatch"}


def utc_timestamp(value: Any) -> dt.datetime:
    """botocore timestamp parser: epoch numbers and ISO strings to aware UTC datetimes."""
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return parse_timestamp(value).astimezone(dt.UTC)


def client(service_name: str) -> Any:
    """Return the process-wide client for ``service_name`` (thread-safe; boto3
    clients themselves are safe to share between threads)."""
    existing = _clients.get(service_name)
    if existing is not None:
        return existing
    with _lock:
        existing = _clients.get(service_name)
        if existing is None:
            config = Config(
                region_name=settings.AWS_REGION,
                connect_timeout=settings.AWS_CONNECT_TIMEOUT,
                read_timeout=settings.AWS_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": settings.AWS_MAX_ATTEMPTS},
                # The registry sync reads from S3 on 16 threads.
                max_pool_connections=32,
                s3={"addressing_style": settings.AWS_S3_ADDRESSING_STYLE},  # type: ignore[arg-type]
                # Presigned URLs must work from a browser: SigV4, which S3 needs
                # for multipart upload parts in every region.
                signature_version="s3v4" if service_name == "s3" else None,
            )
            existing = _session_for(service_name).client(service_name, config=config)  # type: ignore[call-overload]
            _clients[service_name] = existing
        return existing


def _session_for(service_name: str) -> boto3.session.Session:
    # One session per process (two with the UTC one): a session caches the
    # parsed service models, which are the slow part of building a client.
    global _session, _utc_session
    if service_name in _UTC_TIMESTAMP_SERVICES:
        if _utc_session is None:
            _utc_session = boto3.session.Session()
            factory = _utc_session._session.get_component("response_parser_factory")
            factory.set_parser_defaults(timestamp_parser=utc_timestamp)
        return _utc_session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def reset_clients() -> None:
    """Forget every cached client (tests that change endpoints or settings)."""
    with _lock:
        _clients.clear()
