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
import botocore.session
from botocore.config import Config
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: boto3.session.Session | None = None


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
            global _session
            if _session is None:
                # One session per process: it caches the parsed service models,
                # which are the slow part of building a client.
                core = botocore.session.get_session()
                core.get_component("response_parser_factory").set_parser_defaults(
                    timestamp_parser=fast_timestamp
                )
                _session = boto3.session.Session(botocore_session=core)
            existing = _session.client(service_name, config=config)  # type: ignore[call-overload]
            _clients[service_name] = existing
        return existing


def fast_timestamp(value: Any) -> dt.datetime:
    """Parse a timestamp of an AWS answer into an aware UTC datetime.

    ISO 8601 with a zone (every key of an S3 listing, every CloudWatch data
    point) goes to the standard library, some 50 times faster than the
    dateutil parser botocore uses (with 20,000 keys, or a week of one-minute
    points, that parser was most of the work); epoch numbers (the JSON
    protocols) are read directly. Anything else (RFC 822 headers, no zone) goes
    to botocore's own parser, so every answer still parses as botocore
    documents; the result is the same instant, in UTC rather than local time.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(dt.UTC)
    parsed = DEFAULT_TIMESTAMP_PARSER(value)
    return parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else parsed


# Monitoring's name for the same parser (CloudWatch answers are all UTC).
utc_timestamp = fast_timestamp


def reset_clients() -> None:
    """Forget every cached client (tests that change endpoints or settings)."""
    with _lock:
        _clients.clear()
