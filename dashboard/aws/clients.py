"""One boto3 client per service, built once per process with explicit limits.

boto3 reads ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` from the
environment itself, which is how the local stack points these clients at the
embedded AWS and the App Runner stand-in.

With ``MODELDECK_AWS_CALL_LOG`` set to a file, every operation these clients
call (or presign) is appended to it, one JSON line per distinct call: the test
suite checks them against the dashboard's IAM policy (infra/base.yaml).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from typing import Any

import boto3
import botocore
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
                call_log = os.environ.get(CALL_LOG_ENV)
                if call_log:
                    record_calls(_session, call_log)
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


CALL_LOG_ENV = "MODELDECK_AWS_CALL_LOG"

# Parameters that name what a call touches (kept in the log); values of the
# rest (bodies, pointer documents) never leave the process.
_NAMING_PARAMS = (
    "Bucket",
    "Key",
    "Prefix",
    "Name",
    "ServiceArn",
    "serviceArn",
    "service",
    "cluster",
    "taskDefinition",
    "logGroupName",
    "logGroupIdentifier",
    "AlarmName",
)


def record_calls(session: boto3.session.Session, path: str) -> None:
    """Append every operation the session's clients call to ``path`` (JSON lines).

    ``sent`` says the call reached AWS; a call answered by botocore's Stubber
    never does, and neither does a presigned URL (whoever uses it sends it, and a
    contract test presigns made-up names). ``caller`` is the file that
    called boto3 (relative to the repository): a test that acts through this
    client as someone else (deleting an object behind the dashboard's back) is
    not the dashboard. Several processes may share the file: each line is one
    small O_APPEND write.
    """
    seen: set[str] = set()
    lock = threading.Lock()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    libraries = tuple(
        os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep
        for module in (boto3, botocore)
    )

    def caller() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = os.path.abspath(frame.f_code.co_filename)
            if not name.startswith(libraries) and name != os.path.abspath(__file__):
                return os.path.relpath(name, root)
            frame = frame.f_back  # type: ignore[assignment]
        return ""

    def write(entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True)
        with lock:
            if line in seen:
                return
            seen.add(line)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def summary(model: Any, params: dict[str, Any]) -> dict[str, Any]:
        kept: dict[str, Any] = {
            k: params[k] for k in _NAMING_PARAMS if isinstance(params.get(k), str)
        }
        kept.update({k: True for k in params if k not in kept and k not in _NAMING_PARAMS})
        return {
            "service": model.service_model.service_name,
            "operation": model.name,
            "params": kept,
            "caller": caller(),
        }

    def before_parameter_build(
        params: dict[str, Any], model: Any, context: Any = None, **_: Any
    ) -> None:
        entry = summary(model, params)
        if context is not None:
            context["modeldeck_call"] = entry
        write({**entry, "sent": False})

    def before_send(request: Any, **_: Any) -> None:
        entry = (getattr(request, "context", None) or {}).get("modeldeck_call")
        if entry is not None:
            write({**entry, "sent": True})

    events = session._session.get_component("event_emitter")
    events.register("before-parameter-build.*.*", before_parameter_build)
    events.register("before-send.*.*", before_send)


def reset_clients() -> None:
    """Forget every cached client (tests that change endpoints or settings)."""
    with _lock:
        _clients.clear()
