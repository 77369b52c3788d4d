"""Where the embedded AWS answers more like AWS than stock moto does.

moto is the embedded AWS, and it is right about almost everything the
dashboard calls. Two operations needed work, and ``install()`` (called by
``start_moto_server`` before it serves) replaces moto's implementation of
exactly those two, inside the embedded AWS's own process:

``GetMetricData`` (CloudWatch)
    moto scans every stored data point once per period and per query
    (O(periods x queries x points)): a week of one-minute data for one page
    took 30 s, and 24 h took 3 s. This version keeps the points grouped by
    metric and in time order (updated with what was put since the last
    request) and puts each point of the range in its period bucket, so the
    same request takes milliseconds. Its answers are moto's (same buckets,
    same statistics), with three corrections toward
    AWS: a metric's namespace and its exact dimension set must match (moto
    ignores the namespace when dimensions are given and compares dimensions
    with a broken ordering), and a statistic moto cannot compute
    (percentiles) gives no data points rather than nulls.
    ``tests/devstack/test_aws_fidelity.py`` checks the answers against
    moto's own on random data.

``FilterLogEvents`` (CloudWatch Logs)
    moto ignores ``startFromHead`` (AWS: ``false`` lists the latest events
    first) and ``logStreamNamePrefix``, re-parses the filter pattern for every
    event, and finds the page a ``nextToken`` points to by a linear search.
    This version honours both parameters and seeks by time (binary search on
    each stream's events, which the stand-in appends in time order), so the
    newest 200 events of a group of a million come back in milliseconds.
    Filter patterns: JSON conditions (``{ $.status >= 500 && $.path = "/predict" }``,
    see ``JsonFilter``) are matched here; the rest is moto's: single terms and
    quoted phrases, while ``?a ?b`` and ``-a`` match every event, as in moto.

Nothing here runs in the dashboard or in tests' own processes except the
embedded AWS's; the dashboard talks to it over HTTP like to AWS.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import fnmatch
import heapq
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

_installed = False
_lock = threading.Lock()


def install() -> None:
    """Replace moto's GetMetricData and FilterLogEvents; idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto.cloudwatch.models import CloudWatchBackend
        from moto.logs.responses import LogsResponse

        CloudWatchBackend._moto_get_metric_data = CloudWatchBackend.get_metric_data  # type: ignore[attr-defined]
        CloudWatchBackend.get_metric_data = _get_metric_data  # type: ignore[method-assign]
        LogsResponse.filter_log_events = _filter_log_events_response  # type: ignore[method-assign]
        _installed = True


# --- CloudWatch GetMetricData --------------------------------------------------


def _dimension_key(dimensions: Any) -> frozenset[tuple[str, str]]:
    pairs = set()
    for d in dimensions or ():
        if isinstance(d, dict):
            pairs.add((str(d["Name"]), str(d["Value"])))
        else:  # moto's Dimension
            pairs.add((str(d.name), str(d.value)))
    return frozenset(pairs)


class _MetricIndex:
    """moto's stored data points grouped by metric (namespace, name, exact
    dimension set), each group in time order, kept on the backend and brought
    up to date with what was appended since the last request."""

    def __init__(self) -> None:
        self.seen = 0
        self.source: list[Any] | None = None
        self.groups: dict[tuple[str, str, frozenset[tuple[str, str]]], _Group] = {}

    def update(self, data: list[Any]) -> None:
        if data is not self.source or len(data) < self.seen:
            self.__init__()  # type: ignore[misc]
            self.source = data
        for datum in data[self.seen :]:
            key = (datum.namespace, datum.name, _dimension_key(datum.dimensions))
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group()
            group.add(datum)
        self.seen = len(data)


class _Group:
    """One metric's data points in time order, as parallel arrays so that a
    period's statistics are sums and extrema of slices (C loops, not Python)."""

    def __init__(self) -> None:
        self.times: list[Any] = []
        self.data: list[Any] = []
        self.sums: list[float] = []
        self.counts: list[float] = []
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.units: set[Any] = set()
        self.ordered = True

    def add(self, datum: Any) -> None:
        if self.times and datum.timestamp < self.times[-1]:
            self.ordered = False
        self.times.append(datum.timestamp)
        self.data.append(datum)
        self.units.add(datum.unit)
        if hasattr(datum, "value"):  # a single value
            value = datum.value
            self.sums.append(value)
            self.counts.append(1)
            self.mins.append(value)
            self.maxs.append(value)
        else:  # a statistic set
            self.sums.append(datum.sum)
            self.counts.append(datum.sample_count)
            self.mins.append(datum.min)
            self.maxs.append(datum.max)

    def _order(self) -> None:
        if self.ordered:
            return
        data = sorted(self.data, key=lambda d: d.timestamp)
        self.__init__()  # type: ignore[misc]
        for datum in data:
            self.add(datum)

    def periods(
        self, start: Any, end: Any, period: int, stat: str, unit: str | None
    ) -> list[tuple[int, float]]:
        """(period index, statistic) of every period in [start, end) with data."""
        self._order()
        if unit and self.units != {unit}:
            if unit not in self.units:
                return []
            # Mixed units: filter point by point (rare; never from the stand-in).
            other = _Group()
            for datum in self.data:
                if datum.unit == unit:
                    other.add(datum)
            return other.periods(start, end, period, stat, None)
        low = bisect.bisect_left(self.times, start)
        high = bisect.bisect_left(self.times, end)
        found: list[tuple[int, float]] = []
        step = dt.timedelta(seconds=period)
        index = low
        while index < high:
            bucket = int((self.times[index] - start).total_seconds() // period)
            upper = bisect.bisect_left(self.times, start + step * (bucket + 1), index, high)
            value = self._statistic(stat, index, upper)
            if value is not None:
                found.append((bucket, value))
            index = upper
        return found

    def _statistic(self, stat: str, low: int, high: int) -> float | None:
        """What moto's ``Statistics`` computes for these points (None: a
        statistic moto does not compute)."""
        if stat == "Sum":
            return float(sum(self.sums[low:high]))
        if stat == "SampleCount":
            return float(sum(self.counts[low:high]))
        if stat == "Average":
            count = sum(self.counts[low:high])
            return float(sum(self.sums[low:high])) / count if count else None
        if stat == "Minimum":
            return float(min(self.mins[low:high]))
        if stat == "Maximum":
            return float(max(self.maxs[low:high]))
        return None


def _get_metric_data(
    self: Any,
    queries: list[dict[str, Any]],
    start_time: dt.datetime,
    end_time: dt.datetime,
    scan_by: str = "TimestampAscending",
) -> list[dict[str, Any]]:
    from moto.cloudwatch.exceptions import ValidationError
    from moto.cloudwatch.metric_data_expression_parser import parse_expression

    if any("Expression" in q and str(q["Expression"]).startswith("SELECT") for q in queries):
        # Metrics Insights queries: rare, and moto's own answer is all there is.
        return self._moto_get_metric_data(queries, start_time, end_time, scan_by)
    start_time = start_time.replace(microsecond=0)
    end_time = end_time.replace(microsecond=0)
    if start_time > end_time:
        raise ValidationError("The parameter EndTime must be greater than StartTime.")
    if start_time == end_time:
        raise ValidationError("The parameter StartTime must not equal parameter EndTime.")

    with _lock:
        index = getattr(self, "_devstack_index", None)
        if index is None:
            index = self._devstack_index = _MetricIndex()
        index.update(self.metric_data)
        # Metrics moto makes up for other services (few, computed per call).
        extra = _MetricIndex()
        extra.update(list(self.aws_metric_data))

        results: list[dict[str, Any]] = []
        returned: list[dict[str, Any]] = []
        for query in queries:
            if "MetricStat" not in query:
                continue
            metric_stat = query["MetricStat"]
            metric = metric_stat["Metric"]
            name = metric["MetricName"]
            stat = metric_stat["Stat"]
            period = int(metric_stat["Period"])
            unit = metric_stat.get("Unit")
            key = (metric["Namespace"], name, _dimension_key(metric.get("Dimensions")))
            found: dict[int, float] = {}
            for source in (index, extra):
                group = source.groups.get(key)
                if group is None:
                    continue
                for bucket, value in group.periods(start_time, end_time, period, stat, unit):
                    # Both sources at once happens only with moto's made-up metrics.
                    found[bucket] = value if bucket not in found else found[bucket] + value
            timestamps = [start_time + dt.timedelta(seconds=b * period) for b in sorted(found)]
            values: list[Any] = [found[b] for b in sorted(found)]
            if scan_by == "TimestampDescending":
                timestamps.reverse()
                values.reverse()
            result = {
                "id": query["Id"],
                "label": query.get("Label") or f"{name} {stat}",
                "values": values,
                "timestamps": timestamps,
                "status_code": "Complete",
            }
            results.append(result)
            if query.get("ReturnData", True):
                returned.append(dict(result))
    for query in queries:
        if "Expression" not in query:
            continue
        values, timestamps = parse_expression(query["Expression"], results)
        returned.append(
            {
                "id": query["Id"],
                "label": query.get("Label") or query["Id"],
                "values": values,
                "timestamps": timestamps,
                "status_code": "Complete",
            }
        )
    return returned


# --- CloudWatch Logs FilterLogEvents -------------------------------------------


def _in_time_order(stream: Any, events: list[Any]) -> bool:
    """Whether the stream's events are in time order, checking only what was
    appended since the last call (the stand-in appends in order, so this is
    normally true and cheap). The progress is kept on the stream itself."""
    with _lock:
        checked, ordered, last = getattr(stream, "_devstack_order", (0, True, -(2**63)))
        if checked > len(events):
            checked, ordered, last = 0, True, -(2**63)
        if ordered:
            for event in events[checked:]:
                if event.timestamp < last:
                    ordered = False
                    break
                last = event.timestamp
        stream._devstack_order = (len(events), ordered, last)
        return bool(ordered)


def _sort_key(event: Any) -> tuple[int, int]:
    return (int(event.timestamp), int(event.event_id))


def _stream_iter(
    stream: Any,
    start: int | None,
    end: int | None,
    newest_first: bool,
    after: tuple[int, int] | None,
) -> Iterator[tuple[tuple[int, int], str, Any]]:
    """The stream's events within [start, end] strictly after ``after`` in the
    requested order, as (sort key, stream name, event)."""
    name = str(stream.log_stream_name)
    events = list(stream.events)  # a snapshot: the stand-in appends concurrently
    if not _in_time_order(stream, events):
        events.sort(key=_sort_key)
    low, high = 0, len(events)
    if start is not None:
        low = bisect.bisect_left(events, start, key=lambda e: e.timestamp)
    if end is not None:
        high = bisect.bisect_right(events, end, key=lambda e: e.timestamp)
    if after is not None:
        if newest_first:
            high = min(high, bisect.bisect_right(events, after[0], key=lambda e: e.timestamp))
        else:
            low = max(low, bisect.bisect_left(events, after[0], key=lambda e: e.timestamp))
    indexes = range(high - 1, low - 1, -1) if newest_first else range(low, high)
    for index in indexes:
        event = events[index]
        key = _sort_key(event)
        if after is not None and (key >= after if newest_first else key <= after):
            continue
        yield key, name, event


def _encode_token(group: str, newest_first: bool, key: tuple[int, int]) -> str:
    raw = json.dumps({"g": group, "d": int(newest_first), "t": key[0], "i": key[1]})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_token(token: str, group: str) -> tuple[bool, tuple[int, int]] | None:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        if raw["g"] != group:
            return None
        return bool(raw["d"]), (int(raw["t"]), int(raw["i"]))
    except (ValueError, KeyError, TypeError):
        return None


_JSON_CONDITION = re.compile(
    r"\s*\$\.([A-Za-z0-9_.\[\]-]+)\s*(=|!=|>=|<=|>|<)\s*"
    r'("(?:[^"\\]|\\.)*"|[^\s&|)]+)\s*'
)


class JsonFilter:
    """CloudWatch Logs' JSON filter patterns, the common part: ``{ $.a.b OP
    value }`` with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, numbers, quoted
    or bare strings (``*`` as a wildcard), joined by ``&&`` or ``||`` (``&&``
    first, no parentheses). moto matches every line for these; anything else
    in braces is refused with the reason instead of matching everything."""

    def __init__(self, pattern: str) -> None:
        from moto.logs.exceptions import InvalidParameterException

        body = pattern.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise InvalidParameterException(msg="Invalid filter pattern")
        self.any_of: list[list[tuple[list[str], str, str]]] = []
        for alternative in body[1:-1].split("||"):
            conditions = []
            for text in alternative.split("&&"):
                match = _JSON_CONDITION.fullmatch(text)
                if match is None:
                    raise InvalidParameterException(
                        msg=f"Invalid filter pattern (the local stack understands "
                        f"{{ $.field OP value }} joined by && or ||): {text.strip()!r}"
                    )
                path, op, value = match.groups()
                conditions.append((path.split("."), op, value))
            self.any_of.append(conditions)

    def matches(self, message: str) -> bool:
        try:
            document = json.loads(message)
        except ValueError:
            return False
        return any(all(_holds(document, *c) for c in group) for group in self.any_of)


def _holds(document: Any, path: list[str], op: str, value: str) -> bool:
    found = document
    for part in path:
        if not isinstance(found, dict) or part not in found:
            return False
        found = found[part]
    if value.startswith('"'):
        value = json.loads(value)
    elif re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value):
        if isinstance(found, bool) or not isinstance(found, int | float):
            return op == "!="
        number = float(value)
        return {
            "=": found == number,
            "!=": found != number,
            ">": found > number,
            ">=": found >= number,
            "<": found < number,
            "<=": found <= number,
        }[op]
    if op not in {"=", "!="} or isinstance(found, dict | list):
        return False
    text = found if isinstance(found, str) else json.dumps(found)
    equal = fnmatch.fnmatchcase(text, value) if "*" in value else text == value
    return equal if op == "=" else not equal


def _filter_log_events_response(self: Any) -> str:
    from moto.logs.exceptions import InvalidParameterException, ResourceNotFoundException
    from moto.logs.utils import EventMessageFilter

    group_name = self._get_param("logGroupName")
    identifier = self._get_param("logGroupIdentifier")
    backend = self.logs_backend
    group = None
    if group_name:
        group = backend.groups.get(group_name)
    elif identifier:
        group = next((g for g in backend.groups.values() if identifier in (g.name, g.arn)), None)
    if group is None:
        raise ResourceNotFoundException()
    names = self._get_param("logStreamNames") or []
    prefix = self._get_param("logStreamNamePrefix")
    if names and prefix:
        raise InvalidParameterException(
            msg="Cannot specify both logStreamNames and logStreamNamePrefix"
        )
    limit = self._get_param("limit") or 10000
    if limit > 10000:
        raise InvalidParameterException(
            constraint="Member must have value less than or equal to 10000",
            parameter="limit",
            value=limit,
        )
    start = self._get_param("startTime")
    end = self._get_param("endTime")
    pattern = self._get_param("filterPattern") or ""
    newest_first = self._get_param("startFromHead") is False
    after: tuple[int, int] | None = None
    token = self._get_param("nextToken")
    if token:
        decoded = _decode_token(token, group.name)
        if decoded is None:
            # AWS answers an empty page to a token it does not recognise.
            return json.dumps({"events": [], "searchedLogStreams": []})
        newest_first, after = decoded
    streams = [
        s
        for name, s in list(group.streams.items())
        if (not names or name in names) and (not prefix or name.startswith(prefix))
    ]
    matcher: Any = (
        JsonFilter(pattern) if pattern.strip().startswith("{") else EventMessageFilter(pattern)
    )
    merged = heapq.merge(
        *(_stream_iter(s, start, end, newest_first, after) for s in streams),
        key=lambda item: item[0],
        reverse=newest_first,
    )
    page: list[dict[str, Any]] = []
    last_key: tuple[int, int] | None = None
    more = False
    for key, stream_name, event in merged:
        if not matcher.matches(event.message):
            continue
        if len(page) == limit:
            more = True
            break
        page.append(
            {
                "eventId": str(event.event_id),
                "ingestionTime": event.ingestion_time,
                "logStreamName": stream_name,
                "message": event.message,
                "timestamp": event.timestamp,
            }
        )
        last_key = key
    body: dict[str, Any] = {
        "events": page,
        "searchedLogStreams": [
            {"logStreamName": s.log_stream_name, "searchedCompletely": True} for s in streams
        ],
    }
    if more and last_key is not None:
        body["nextToken"] = _encode_token(group.name, newest_first, last_key)
    return json.dumps(body)
