"""Amazon CloudWatch Logs: what the App Runner services wrote.

Reads only: FilterLogEvents (a group, optionally some streams, a filter
pattern, newest first) and DescribeLogStreams.
A log group or stream that does not exist yet reads as empty, because App
Runner creates them lazily (a service that never logged has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsNotFoundError, translate

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient

# FilterLogEvents answers at most this many events per call.
MAX_EVENTS_PER_CALL = 10_000
# DescribeLogStreams answers at most this many streams per call.
MAX_STREAMS_PER_CALL = 50


def _logs() -> CloudWatchLogsClient:
    return cast("CloudWatchLogsClient", client("logs"))


@dataclass(frozen=True)
class LogEvent:
    """One log line. ``timestamp`` is milliseconds since the epoch."""

    event_id: str
    timestamp: int
    stream: str
    message: str


@dataclass(frozen=True)
class LogPage:
    """One call's events and the token of the next call (None: no more)."""

    events: list[LogEvent]
    next_token: str | None


@dataclass(frozen=True)
class LogStreamInfo:
    name: str
    last_event_ms: int | None
    first_event_ms: int | None


def filter_log_events(
    *,
    group: str,
    streams: list[str] | None = None,
    stream_prefix: str | None = None,
    pattern: str = "",
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 200,
    next_token: str | None = None,
    newest_first: bool = True,
) -> LogPage:
    """One FilterLogEvents call over ``group``.

    ``newest_first`` is FilterLogEvents' ``startFromHead=false`` (latest events
    first); the token of a page keeps the direction of the first call. A page
    may be empty and still have a next token (CloudWatch searches a slice of
    the group per call). Raises AwsError, except that a missing group reads as
    no events.
    """
    if streams and stream_prefix:
        raise ValueError("pass streams or stream_prefix, not both")
    kwargs: dict[str, Any] = {
        "logGroupName": group,
        "limit": max(1, min(limit, MAX_EVENTS_PER_CALL)),
        "startFromHead": not newest_first,
    }
    if streams:
        kwargs["logStreamNames"] = streams[:100]
    if stream_prefix:
        kwargs["logStreamNamePrefix"] = stream_prefix
    if pattern:
        kwargs["filterPattern"] = pattern
    if start_ms is not None:
        kwargs["startTime"] = max(0, int(start_ms))
    if end_ms is not None:
        kwargs["endTime"] = max(0, int(end_ms))
    if next_token:
        kwargs["nextToken"] = next_token
    try:
        response = _logs().filter_log_events(**kwargs)
    except Exception as exc:
        error = translate(exc, operation="FilterLogEvents")
        if isinstance(error, AwsNotFoundError):
            return LogPage(events=[], next_token=None)
        raise error from exc
    events = [
        LogEvent(
            event_id=str(raw.get("eventId", "")),
            timestamp=int(raw.get("timestamp", 0)),
            stream=str(raw.get("logStreamName", "")),
            message=str(raw.get("message", "")),
        )
        for raw in response.get("events", [])
    ]
    return LogPage(events=events, next_token=response.get("nextToken") or None)


def describe_log_streams(
    *, group: str, prefix: str | None = None, limit: int = MAX_STREAMS_PER_CALL
) -> list[LogStreamInfo]:
    """The group's streams: most recently written first, or by name under ``prefix``
    (CloudWatch cannot do both at once). One call; a missing group has none."""
    kwargs: dict[str, Any] = {
        "logGroupName": group,
        "limit": max(1, min(limit, MAX_STREAMS_PER_CALL)),
    }
    if prefix:
        kwargs["logStreamNamePrefix"] = prefix
    else:
        kwargs["orderBy"] = "LastEventTime"
        kwargs["descending"] = True
    try:
        response = _logs().describe_log_streams(**kwargs)
    except Exception as exc:
        error = translate(exc, operation="DescribeLogStreams")
        if isinstance(error, AwsNotFoundError):
            return []
        raise error from exc
    return [
        LogStreamInfo(
            name=str(raw.get("logStreamName", "")),
            last_event_ms=raw.get("lastEventTimestamp"),
            first_event_ms=raw.get("firstEventTimestamp"),
        )
        for raw in response.get("logStreams", [])
    ]
