"""Amazon CloudWatch: metric time series (GetMetricData) and alarms.

One ``GetMetricData`` call answers every chart of a page: the caller passes all
its queries at once and gets a series per query id, with AWS's paging
(``NextToken``) followed here so callers never see a partial answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsError, translate

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

# GetMetricData answers at most this many data points per call (all queries
# together); beyond that it pages with NextToken.
MAX_DATAPOINTS_PER_CALL = 100_800
# DescribeAlarms accepts at most 100 names per call.
_MAX_ALARM_NAMES = 100
# Statistics CloudWatch computes for every metric; pNN / tmNN etc. are
# "extended" (percentile-family) statistics.
STANDARD_STATS = frozenset({"SampleCount", "Average", "Sum", "Minimum", "Maximum"})
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")


def _cloudwatch() -> CloudWatchClient:
    return cast("CloudWatchClient", client("cloudwatch"))


Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricStat:
    """One metric and how to aggregate it: CloudWatch's ``MetricStat``."""

    namespace: str
    metric_name: str
    dimensions: Dimensions
    stat: str  # "Sum", "Average", "p99", ...
    period: int  # seconds
    unit: str | None = None

    def to_api(self) -> dict[str, Any]:
        stat: dict[str, Any] = {
            "Metric": {
                "Namespace": self.namespace,
                "MetricName": self.metric_name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            },
            "Period": self.period,
            "Stat": self.stat,
        }
        if self.unit:
            stat["Unit"] = self.unit
        return stat


@dataclass(frozen=True)
class MetricQuery:
    """One entry of ``MetricDataQueries``: a metric (``stat``) or a metric-math
    ``expression`` over the ids of other queries of the same call."""

    id: str  # ^[a-z][a-zA-Z0-9_]*$, unique within the call
    stat: MetricStat | None = None
    expression: str | None = None
    label: str | None = None
    return_data: bool = True
    period: int | None = None  # only for expressions (stats carry their own)

    def __post_init__(self) -> None:
        if (self.stat is None) == (self.expression is None):
            raise ValueError(f"query {self.id!r} needs exactly one of stat and expression")

    def to_api(self) -> dict[str, Any]:
        query: dict[str, Any] = {"Id": self.id, "ReturnData": self.return_data}
        if self.stat is not None:
            query["MetricStat"] = self.stat.to_api()
        else:
            query["Expression"] = self.expression
            if self.period:
                query["Period"] = self.period
        if self.label:
            query["Label"] = self.label
        return query


@dataclass
class MetricSeries:
    """The answer to one query: ascending timestamps with their values."""

    id: str
    label: str
    timestamps: list[dt.datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    status: str = "Complete"  # Complete, PartialData, InternalError, Forbidden
    messages: list[str] = field(default_factory=list)

    def points(self) -> list[tuple[dt.datetime, float]]:
        return list(zip(self.timestamps, self.values, strict=True))


@dataclass
class MetricDataResult:
    """All series of one logical GetMetricData request, and how many calls it took."""

    series: dict[str, MetricSeries]
    calls: int
    messages: list[str] = field(default_factory=list)


def get_metric_data(
    *,
    queries: Sequence[MetricQuery],
    start: dt.datetime,
    end: dt.datetime,
    max_datapoints: int | None = None,
    max_pages: int = 20,
) -> MetricDataResult:
    """Run every query in one GetMetricData request (following NextToken).

    Series come back in ascending time order whatever order the pages used.
    Raises AwsError, and ValueError for an empty or duplicate query list.
    """
    if not queries:
        raise ValueError("get_metric_data needs at least one query")
    ids = [q.id for q in queries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"query ids must be unique: {ids}")
    request: dict[str, Any] = {
        "MetricDataQueries": [q.to_api() for q in queries],
        "StartTime": start,
        "EndTime": end,
        "ScanBy": "TimestampAscending",
    }
    if max_datapoints:
        request["MaxDatapoints"] = max_datapoints
    series: dict[str, MetricSeries] = {}
    messages: list[str] = []
    calls = 0
    token: str | None = None
    try:
        while True:
            kwargs = dict(request)
            if token:
                kwargs["NextToken"] = token
            response = _cloudwatch().get_metric_data(**kwargs)
            calls += 1
            for raw in response.get("MetricDataResults", []):
                _merge(series, raw)
            messages += [
                f"{m.get('Code', '')}: {m.get('Value', '')}" for m in response.get("Messages", [])
            ]
            token = response.get("NextToken")
            if not token:
                break
            if calls >= max_pages:
                messages.append(f"stopped after {calls} pages: the answer is incomplete")
                break
    except AwsError:
        raise
    except Exception as exc:
        raise translate(exc, operation="GetMetricData") from exc
    for one in series.values():
        if one.timestamps and one.timestamps != sorted(one.timestamps):
            pairs = sorted(zip(one.timestamps, one.values, strict=True))
            one.timestamps = [t for t, _ in pairs]
            one.values = [v for _, v in pairs]
    return MetricDataResult(series=series, calls=calls, messages=messages)


def _merge(series: dict[str, MetricSeries], raw: Any) -> None:
    query_id = str(raw.get("Id", ""))
    one = series.get(query_id)
    if one is None:
        one = series[query_id] = MetricSeries(id=query_id, label=str(raw.get("Label", query_id)))
    one.timestamps += list(raw.get("Timestamps", []))
    one.values += [float(v) for v in raw.get("Values", [])]
    status = str(raw.get("StatusCode", "Complete"))
    # A later page may complete what an earlier one left partial; keep the worst.
    if status != "Complete":
        one.status = status
    one.messages += [f"{m.get('Code', '')}: {m.get('Value', '')}" for m in raw.get("Messages", [])]


# --- Alarms -------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmSpec:
    """A metric alarm to create or replace (PutMetricAlarm is an upsert).

    Either a single metric (``metric`` with a standard or extended statistic)
    or metric math (``metrics``: the queries, exactly one returning data).
    """

    name: str
    description: str
    threshold: float
    comparison: str  # GreaterThanThreshold, ...
    evaluation_periods: int
    datapoints_to_alarm: int
    metric: MetricStat | None = None
    metrics: tuple[MetricQuery, ...] = ()
    treat_missing_data: str = "notBreaching"
    tags: tuple[tuple[str, str], ...] = ()

    def to_api(self) -> dict[str, Any]:
        if (self.metric is None) == (not self.metrics):
            raise ValueError(f"alarm {self.name!r} needs exactly one of metric and metrics")
        request: dict[str, Any] = {
            "AlarmName": self.name,
            "AlarmDescription": self.description[:1024],
            "ActionsEnabled": False,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.datapoints_to_alarm,
            "TreatMissingData": self.treat_missing_data,
        }
        if self.metric is not None:
            metric = self.metric
            request.update(
                {
                    "Namespace": metric.namespace,
                    "MetricName": metric.metric_name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in metric.dimensions],
                    "Period": metric.period,
                }
            )
            if metric.stat in STANDARD_STATS:
                request["Statistic"] = metric.stat
            else:
                request["ExtendedStatistic"] = metric.stat
                # Few samples make a percentile meaningless; do not alarm on them.
                request["EvaluateLowSampleCountPercentile"] = "ignore"
            if metric.unit:
                request["Unit"] = metric.unit
        else:
            request["Metrics"] = [q.to_api() for q in self.metrics]
        if self.tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags]
        return request


@dataclass(frozen=True)
class AlarmInfo:
    """An alarm's current state as DescribeAlarms reports it."""

    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    reason: str
    updated_at: dt.datetime | None
    arn: str = ""
    threshold: float | None = None

    @property
    def firing(self) -> bool:
        return self.state == "ALARM"


def put_metric_alarm(*, spec: AlarmSpec) -> None:
    """Create the alarm, or replace its whole definition if it exists."""
    try:
        _cloudwatch().put_metric_alarm(**spec.to_api())
    except Exception as exc:
        raise translate(exc, operation="PutMetricAlarm") from exc


def describe_alarms(*, names: Iterable[str]) -> list[AlarmInfo]:
    """The named metric alarms that exist (missing names are simply absent), all pages."""
    wanted = sorted(set(names))
    found: list[AlarmInfo] = []
    try:
        for start in range(0, len(wanted), _MAX_ALARM_NAMES):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {
                    "AlarmNames": wanted[start : start + _MAX_ALARM_NAMES],
                    "AlarmTypes": ["MetricAlarm"],
                }
                if token:
                    kwargs["NextToken"] = token
                response = _cloudwatch().describe_alarms(**kwargs)
                for raw in response.get("MetricAlarms", []):
                    found.append(
                        AlarmInfo(
                            name=str(raw.get("AlarmName", "")),
                            state=str(raw.get("StateValue", "")),
                            reason=str(raw.get("StateReason", "")),
                            updated_at=raw.get("StateUpdatedTimestamp"),
                            arn=str(raw.get("AlarmArn", "")),
                            threshold=raw.get("Threshold"),
                        )
                    )
                token = response.get("NextToken")
                if not token:
                    break
    except Exception as exc:
        raise translate(exc, operation="DescribeAlarms") from exc
    return found


def delete_alarms(*, names: Iterable[str]) -> None:
    """Delete the named alarms; names that do not exist are ignored."""
    wanted = sorted(set(names))
    try:
        for start in range(0, len(wanted), _MAX_ALARM_NAMES):
            _cloudwatch().delete_alarms(AlarmNames=wanted[start : start + _MAX_ALARM_NAMES])
    except Exception as exc:
        raise translate(exc, operation="DeleteAlarms") from exc


def set_alarm_state(*, name: str, state: str, reason: str) -> None:
    """Force an alarm's state until its next evaluation (AWS's way to test
    what an alarm triggers). Raises AwsNotFoundError for an unknown alarm."""
    if state not in ALARM_STATES:
        raise ValueError(f"state must be one of {ALARM_STATES}, not {state!r}")
    try:
        _cloudwatch().set_alarm_state(
            AlarmName=name,
            StateValue=cast("Literal['ALARM', 'INSUFFICIENT_DATA', 'OK']", state),
            StateReason=reason[:1023] or state,
        )
    except Exception as exc:
        raise translate(exc, operation="SetAlarmState") from exc
