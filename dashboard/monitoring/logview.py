"""Reads of an environment's CloudWatch Logs, and how a line is shown.

Sources: ``application`` (every ``instance/<id>`` stream of the application
log group: what the inference instances print), ``service`` (App Runner's
service log group: ``events`` and ``deployment/<operation-id>``), or one
stream by name (``instance/...`` in the application group, anything else in
the service group). Newest first; ``next`` pages to older lines.

An ECS service has only the application's log group (wherever its container's
awslogs driver writes, streams ``<prefix>/<container>/<task-id>``): every
stream name is read there, and ``service`` is refused (ECS keeps its service
events in DescribeServices, not in CloudWatch Logs).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from dashboard.aws import logs
from dashboard.deployments.models import Environment
from dashboard.monitoring.catalog import LogLayout, MonitoredService
from dashboard.monitoring.selectors import environment_service

PAGE_LINES = 200
# FilterLogEvents may answer empty pages while it searches; follow at most
# this many calls, or this long, before showing what was found.
_MAX_CALLS = 8
_TIME_BUDGET_SECONDS = 5.0
_STREAM = re.compile(r"^[^:*]{1,512}$")


class LogQueryError(ValueError):
    """A bad logs request (the message says what to fix)."""


@dataclass(frozen=True)
class LogSource:
    group: str
    streams: tuple[str, ...] = ()
    prefix: str | None = None
    label: str = ""


def log_source(*, environment: Environment, stream: str) -> LogSource:
    """Where ``stream`` (application, service, or a stream name) is read from."""
    return source_for(environment_service(environment=environment), stream)


def _layout(service: MonitoredService) -> LogLayout:
    if service.logs is None:
        raise LogQueryError(f"no CloudWatch Logs for the {service.label}: {service.logs_problem}")
    return service.logs


def source_for(service: MonitoredService, stream: str) -> LogSource:
    layout = _layout(service)
    stream = (stream or "application").strip()
    if stream == "application":
        return LogSource(
            layout.application_group, prefix=layout.application_prefix, label="application"
        )
    if stream == "service":
        if layout.service_group is None:
            raise LogQueryError(
                f"the {service.label} has no service log group (ECS writes only the "
                "application's logs to CloudWatch Logs): use stream=application"
            )
        return LogSource(layout.service_group, label="service")
    if not _STREAM.match(stream):
        raise LogQueryError(
            "stream must be 'application', 'service' or a log stream name (no ':' or '*')"
        )
    if layout.service_group is None:
        return LogSource(layout.application_group, streams=(stream,), label=stream)
    group = layout.application_group if stream.startswith("instance/") else layout.service_group
    return LogSource(group, streams=(stream,), label=stream)


# --- How a line is shown ------------------------------------------------------------

_LEVELS = {
    "critical": "error",
    "fatal": "error",
    "error": "error",
    "exception": "error",
    "warning": "warning",
    "warn": "warning",
}
_TEXT_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL|Traceback|Exception)\b")
_TEXT_WARNING = re.compile(r"\b(WARNING|WARN)\b")
_LATENCY_KEYS = (
    ("latency_ms", 1.0),
    ("duration_ms", 1.0),
    ("elapsed_ms", 1.0),
    ("latency_s", 1000.0),
    ("duration_s", 1000.0),
    ("latency", 1.0),
)


@dataclass
class LogLine:
    """A log event, parsed for display."""

    event_id: str
    timestamp: int  # ms since the epoch
    stream: str
    message: str
    level: str = "info"  # info, warning, error
    kind: str = "text"  # text, json, request, metrics
    fields: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp / 1000, tz=dt.UTC)

    @property
    def error(self) -> bool:
        return self.level == "error"

    @property
    def millis(self) -> str:
        return f"{self.timestamp % 1000:03d}"

    @property
    def text(self) -> str:
        return summary(self)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "stream": self.stream,
            "message": self.message,
        }


def _first(fields: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in fields and fields[name] not in (None, ""):
            return fields[name]
    return None


def parse_line(event: logs.LogEvent) -> LogLine:
    """Recognise JSON lines (the inference service's), request lines and EMF lines."""
    line = LogLine(
        event_id=event.event_id,
        timestamp=event.timestamp,
        stream=event.stream,
        message=event.message,
    )
    text = event.message.strip()
    parsed: Any = None
    if text.startswith("{") and text.endswith("}"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
    if isinstance(parsed, dict):
        line.fields = parsed
        line.kind = "json"
        level = str(_first(parsed, "level", "levelname", "severity") or "").lower()
        line.level = _LEVELS.get(level, "info")
        status = _first(parsed, "status", "status_code")
        if "_aws" in parsed and isinstance(parsed["_aws"], dict):
            line.kind = "metrics"
        elif _first(parsed, "method") and _first(parsed, "path") and status is not None:
            line.kind = "request"
            latency = None
            for key, scale in _LATENCY_KEYS:
                value = parsed.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    latency = round(float(value) * scale, 2)
                    break
            line.request = {
                "method": str(parsed.get("method")),
                "path": str(parsed.get("path")),
                "status": status,
                "latency_ms": latency,
                "version": _first(parsed, "version", "model_version"),
                "request_id": _first(parsed, "request_id", "requestId", "id"),
                "status_class": f"{str(status)[:1]}xx",
            }
            try:
                if int(status) >= 500:
                    line.level = "error"
            except (TypeError, ValueError):
                pass
        if "exc_info" in parsed or "traceback" in parsed:
            line.level = "error"
        return line
    if _TEXT_ERROR.search(text):
        line.level = "error"
    elif _TEXT_WARNING.search(text):
        line.level = "warning"
    return line


def summary(line: LogLine) -> str:
    """The readable text of a JSON line: its message and the other fields."""
    if not line.fields:
        return line.message
    if line.kind == "metrics":
        names = [k for k in line.fields if k != "_aws" and isinstance(line.fields[k], int | float)]
        return "metrics: " + ", ".join(f"{k}={line.fields[k]}" for k in names)
    message = _first(line.fields, "message", "msg", "event") or ""
    rest = {
        k: v
        for k, v in line.fields.items()
        if k not in {"message", "msg", "level", "levelname", "time", "timestamp", "ts", "logger"}
    }
    extras = " ".join(f"{k}={_short(v)}" for k, v in rest.items() if v not in (None, ""))
    return f"{message} {extras}".strip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 300 else text[:297] + "..."


# --- Reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogsResult:
    lines: list[LogLine]
    next_token: str | None
    calls: int


def logs_read(
    *,
    environment: Environment,
    stream: str = "application",
    pattern: str = "",
    start: dt.datetime,
    end: dt.datetime,
    next_token: str | None = None,
    limit: int = PAGE_LINES,
) -> LogsResult:
    """Up to ``limit`` lines, newest first, and the token of the older ones.

    Raises LogQueryError for bad input, AwsError.
    """
    if end <= start:
        raise LogQueryError("end must be after start")
    if len(pattern) > 1024:
        raise LogQueryError("the filter pattern is longer than CloudWatch's 1024 characters")
    source = log_source(environment=environment, stream=stream)
    lines: list[LogLine] = []
    calls = 0
    deadline = time.monotonic() + _TIME_BUDGET_SECONDS
    token = next_token
    while True:
        page = logs.filter_log_events(
            group=source.group,
            streams=list(source.streams) or None,
            stream_prefix=source.prefix,
            pattern=pattern,
            start_ms=int(start.timestamp() * 1000),
            end_ms=int(end.timestamp() * 1000),
            limit=limit - len(lines),
            next_token=token,
            newest_first=True,
        )
        calls += 1
        lines += [parse_line(e) for e in page.events]
        token = page.next_token
        if not token or len(lines) >= limit:
            break
        if calls >= _MAX_CALLS or time.monotonic() > deadline:
            break
    return LogsResult(lines=lines, next_token=token, calls=calls)


def logs_tail(
    *,
    environment: Environment,
    stream: str = "application",
    pattern: str = "",
    after_ms: int,
    seen: set[str],
    limit: int = PAGE_LINES,
) -> tuple[list[LogLine], bool]:
    """Lines newer than ``after_ms`` (and not in ``seen``), newest first, for live
    tail; the flag says more arrived than ``limit`` (the oldest were skipped)."""
    source = log_source(environment=environment, stream=stream)
    page = logs.filter_log_events(
        group=source.group,
        streams=list(source.streams) or None,
        stream_prefix=source.prefix,
        pattern=pattern,
        start_ms=after_ms,
        end_ms=int(time.time() * 1000) + 60_000,
        limit=limit,
        newest_first=True,
    )
    lines = [parse_line(e) for e in page.events if e.event_id not in seen]
    return lines, page.next_token is not None


def stream_names(*, environment: Environment) -> dict[str, list[str]]:
    """The most recently written streams of both groups (for the stream picker)."""
    layout = _layout(environment_service(environment=environment))
    application = logs.describe_log_streams(group=layout.application_group)
    if layout.application_prefix:
        # The group may hold other containers' streams (sidecars, other services).
        application = [s for s in application if s.name.startswith(layout.application_prefix)]
    return {
        "application": [s.name for s in application],
        "service": [s.name for s in logs.describe_log_streams(group=layout.service_group)]
        if layout.service_group
        else [],
    }
