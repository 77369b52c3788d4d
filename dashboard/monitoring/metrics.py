"""Reads of CloudWatch metrics for the pages and the API.

Every chart of a metrics page comes from ONE GetMetricData request (paging
inside it is followed by ``dashboard.aws.cloudwatch``), and the answer is
shared through Django's cache (Redis) by every page showing the same
environment and range: the key names the environment, the range and the
refresh slot the request falls in, and a lock in the cache makes concurrent
misses wait for the one request in flight instead of sending their own. So
twenty open pages cost CloudWatch what one costs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from dashboard.aws import cloudwatch
from dashboard.aws.cloudwatch import Dimensions, MetricQuery, MetricStat
from dashboard.deployments.models import Deployment, Environment
from dashboard.monitoring import catalog
from dashboard.monitoring.catalog import METRICS, RANGES, MetricDef, MetricSource, MonitoredService
from dashboard.monitoring.selectors import (
    deployment_live_at,
    deployment_markers,
    environment_service,
    inference_dimensions,
    versions_in_window,
)
from dashboard.monitoring.shared import shared_answer

# CloudWatch keeps one-minute data for 15 days, five-minute data for 63 days
# and hourly data for 455 days; nothing older exists.
MAX_AGE = dt.timedelta(days=455)
MAX_POINTS_PER_SERIES = 1440


class WindowError(ValueError):
    """A time range or period that cannot be asked of CloudWatch (the message says why)."""


@dataclass(frozen=True)
class TimeWindow:
    """The time range of a chart request, aligned to its period."""

    start: dt.datetime
    end: dt.datetime
    period: int
    preset: str = ""
    refresh: int = 0  # seconds until the answer may have changed; 0: it never will

    @property
    def timestamps(self) -> list[int]:
        """The start of every period in the window, in epoch seconds."""
        first = int(self.start.timestamp())
        last = int(self.end.timestamp())
        return list(range(first, last, self.period))


def _epoch(value: dt.datetime) -> int:
    return int(value.timestamp())


def _from_epoch(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, tz=dt.UTC)


def window_for_preset(key: str, *, now: dt.datetime | None = None) -> TimeWindow:
    """The window of a range preset (1h, 6h, 24h, 7d) ending now.

    The end is rounded up to the preset's refresh slot, so every request in the
    same slot asks for exactly the same window (and shares one answer).
    """
    preset = RANGES.get(key)
    if preset is None:
        raise WindowError(f"range must be one of {', '.join(RANGES)} (or give start and end)")
    now_s = (now or timezone.now()).timestamp()
    end = (math.floor(now_s / preset.refresh) + 1) * preset.refresh
    start = math.floor((end - preset.seconds) / preset.period) * preset.period
    return TimeWindow(
        start=_from_epoch(start),
        end=_from_epoch(end),
        period=preset.period,
        preset=key,
        refresh=preset.refresh,
    )


def window_custom(
    *,
    start: dt.datetime,
    end: dt.datetime,
    period: int | None = None,
    now: dt.datetime | None = None,
) -> TimeWindow:
    """A window between two instants (aware datetimes), checked like CloudWatch would."""
    now = now or timezone.now()
    if start.tzinfo is None or end.tzinfo is None:
        raise WindowError("start and end need a time zone (e.g. 2026-11-24T03:00:00Z)")
    if end <= start:
        raise WindowError("end must be after start")
    if start < now - MAX_AGE:
        raise WindowError("start is more than 455 days ago: CloudWatch keeps nothing older")
    span = (end - start).total_seconds()
    if period is None:
        period = catalog.period_for(span)
    elif period < 60 or period % 60:
        raise WindowError(
            "period must be a multiple of 60 seconds (App Runner publishes per minute)"
        )
    if span / period > MAX_POINTS_PER_SERIES:
        raise WindowError(
            f"{span / period:.0f} points per series is too many: at most "
            f"{MAX_POINTS_PER_SERIES} (raise period or shorten the range)"
        )
    first = math.floor(start.timestamp() / 60) * 60
    last = math.ceil(end.timestamp() / 60) * 60
    # Windows still open keep changing; short-lived reuse as for the presets.
    refresh = 0 if last < now.timestamp() - 600 else 15
    return TimeWindow(
        start=_from_epoch(first), end=_from_epoch(last), period=period, refresh=refresh
    )


# --- Cache keys (answers are shared through monitoring.shared.shared_answer) -----


def _key(*parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
    return f"monitoring:metrics:v1:{digest}"


# --- Queries ----------------------------------------------------------------------


class _Queries:
    """Deduplicated MetricDataQueries of one request, by what they ask."""

    def __init__(self, period: int) -> None:
        self.period = period
        self._ids: dict[MetricStat, str] = {}

    def add(self, stat: MetricStat) -> str:
        found = self._ids.get(stat)
        if found is None:
            found = self._ids[stat] = f"q{len(self._ids)}"
        return found

    def all(self) -> list[MetricQuery]:
        return [MetricQuery(id=qid, stat=stat) for stat, qid in self._ids.items()]


def _aligned(
    series: cloudwatch.MetricSeries | None, axis: list[int], *, fill_zero: bool
) -> list[float | None]:
    by_time: dict[int, float] = {}
    if series is not None:
        by_time = {_epoch(t): v for t, v in zip(series.timestamps, series.values, strict=True)}
    default = 0.0 if fill_zero else None
    return [by_time.get(t, default) for t in axis]


def _ratio(num: list[float | None], den: list[float | None]) -> list[float | None]:
    out: list[float | None] = []
    for n, d in zip(num, den, strict=True):
        out.append(round(100.0 * (n or 0.0) / d, 3) if d else None)
    return out


# Where a catalog metric is for one series: the service's source of it, or
# the inference namespace with one version's dimensions; None: not available.
Where = Callable[[MetricDef], MetricSource | None]


def _inference_where(dims: Dimensions) -> Where:
    def where(definition: MetricDef) -> MetricSource | None:
        return MetricSource(definition.namespace, definition.metric_name, (dims,))

    return where


def _service_where(service: MonitoredService) -> Where:
    return lambda definition: service.source(definition.key)


def _combined(parts: list[list[float | None]], how: str, scale: float) -> list[float | None]:
    if len(parts) == 1 and scale == 1.0:
        return parts[0]
    out: list[float | None] = []
    for values in zip(*parts, strict=True):
        present = [v for v in values if v is not None]
        if not present:
            out.append(None)
            continue
        value = sum(present) if how == "sum" else max(present)
        out.append(round(value * scale, 6) if scale != 1.0 else value)
    return out


def _series_values(
    definition: MetricDef,
    stat: str,
    where: Where,
    queries: _Queries,
    results: dict[str, cloudwatch.MetricSeries] | None,
    axis: list[int],
    *,
    sort_dimensions: bool = True,
) -> list[float | None] | None:
    """With ``results`` None: register the queries (and return []). Else return
    the aligned values. None when the metric has no source here."""
    if definition.derived_from:
        numerator, denominator = (METRICS[k] for k in definition.derived_from)
        num = _series_values(numerator, "Sum", where, queries, results, axis)
        den = _series_values(denominator, "Sum", where, queries, results, axis)
        if num is None or den is None:
            return None
        return _ratio(num, den) if results is not None else []
    source = where(definition)
    if source is None:
        return None
    ids = [
        queries.add(
            catalog.metric_stat(
                namespace=source.namespace,
                metric_name=source.metric_name,
                dimensions=tuple(sorted(dims)) if sort_dimensions else dims,
                stat=stat,
                period=queries.period,
            )
        )
        for dims in source.dimension_sets
    ]
    if results is None:
        return []
    parts = [_aligned(results.get(qid), axis, fill_zero=definition.additive) for qid in ids]
    return _combined(parts, source.combine_for(stat), source.scale)


def metrics_page_data(*, environment: Environment, window: TimeWindow) -> dict[str, Any]:
    """Every chart of the metrics page, the deployment markers and notes, as JSON.

    One GetMetricData request, shared by all pages asking the same in the
    same refresh slot (see ``shared_answer``). ``cached`` says whether this
    answer cost CloudWatch a call. Raises AwsError, NotAServiceArn.
    """
    service = environment_service(environment=environment)
    versions = versions_in_window(environment=environment, start=window.start, end=window.end)
    extra_dims = inference_dimensions(environment=environment)
    key = _key(
        "page",
        environment.pk,
        environment.service_arn,
        service.cache_token,
        window.start,
        window.end,
        window.period,
        versions,
        extra_dims,
        settings.CLOUDWATCH_PERCENTILES_NAMESPACE,
        settings.INFERENCE_METRICS_NAMESPACE,
    )

    def compute() -> dict[str, Any]:
        return _page_data(environment, window, service, versions, extra_dims)

    answer, cached = shared_answer(key, window.refresh or 3600, compute)
    # Markers come from our own database: always current, never cached.
    markers = deployment_markers(environment=environment, start=window.start, end=window.end)
    return {
        **answer,
        "cached": cached,
        "markers": [m.as_json() for m in markers],
        # For the pages' refresh timing (the answer itself may be older).
        "server_time": timezone.now().timestamp(),
    }


def _page_data(
    environment: Environment,
    window: TimeWindow,
    service: MonitoredService,
    versions: list[str],
    extra_dims: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    axis = window.timestamps
    queries = _Queries(window.period)
    service_where = _service_where(service)

    def plan(results: dict[str, cloudwatch.MetricSeries] | None) -> list[dict[str, Any]]:
        charts = []
        for chart in service.charts:
            lines = []
            for series in chart.series:
                definition = METRICS[series.metric]
                targets: list[tuple[str | None, Where]] = (
                    [
                        (v, _inference_where(tuple(sorted((*extra_dims, ("Version", v))))))
                        for v in versions
                    ]
                    if chart.per_version
                    else [(None, service_where)]
                )
                for version, where in targets:
                    values = _series_values(definition, series.stat, where, queries, results, axis)
                    if values is None:
                        continue  # not published by this kind of service
                    lines.append(
                        {
                            "label": version if version is not None else series.label,
                            "metric": series.metric,
                            "stat": series.stat,
                            "version": version,
                            "values": values,
                        }
                    )
            if not lines and not chart.per_version:
                continue
            charts.append(
                {
                    "id": chart.id,
                    "title": chart.title,
                    "unit": chart.unit,
                    "help": chart.help,
                    "per_version": chart.per_version,
                    "series": lines,
                }
            )
        return charts

    plan(None)  # registers every query
    result = cloudwatch.get_metric_data(queries=queries.all(), start=window.start, end=window.end)
    charts = plan(result.series)
    notes = list(service.notes)
    if settings.CLOUDWATCH_PERCENTILES_NAMESPACE:
        notes.append(
            "Percentiles here are pre-computed by the local App Runner stand-in for each "
            "5-second window and averaged per period (the embedded CloudWatch computes none); "
            "on AWS CloudWatch computes them from every request."
        )
    if not versions:
        notes.append("No model version is known for this range: the inference charts are empty.")
    partial = [s.id for s in result.series.values() if s.status != "Complete"]
    if partial or result.messages:
        notes.append(
            "CloudWatch did not answer everything: " + "; ".join(result.messages or partial)
        )
    return {
        "environment": {"model": environment.model_name, "name": environment.name},
        "platform": service.platform,
        "service": service.label,
        "start": _epoch(window.start),
        "end": _epoch(window.end),
        "period": window.period,
        "range": window.preset,
        "refresh": window.refresh,
        "timestamps": axis,
        "versions": versions,
        "charts": charts,
        "notes": notes,
        "cloudwatch_calls": result.calls,
        "queries": len(queries.all()),
        "generated_at": timezone.now().isoformat(),
    }


# --- One metric (the API) ----------------------------------------------------------


def metric_points(
    *,
    environment: Environment,
    metric: str,
    stat: str | None,
    window: TimeWindow,
    version: str | None = None,
) -> dict[str, Any]:
    """One metric of the environment's service over ``window`` (the metrics API).

    Raises KeyError for an unknown metric, ValueError for a bad stat or a
    version on a metric that has none, AwsError, NotAServiceArn.
    """
    definition = METRICS[metric]
    stat = stat or definition.default_stat
    if definition.derived_from and stat != "Sum":
        raise ValueError(f"{metric} is a ratio of sums: stat must be Sum (or left out)")
    if not catalog.valid_stat(stat):
        raise ValueError(
            f"stat {stat!r} is not one of {', '.join(catalog.STANDARD_STATS)} or pNN (p50, p99.9)"
        )
    if version and not definition.inference:
        raise ValueError(f"{metric} is a service metric: it has no version")
    if definition.inference:
        version = version or environment.promoted_version
        if not version:
            raise ValueError(f"{metric} is per model version: pass version")
        dims = tuple(sorted((*inference_dimensions(environment=environment), ("Version", version))))
        where = _inference_where(dims)
        token = repr(dims)
    else:
        service = environment_service(environment=environment)
        if service.source(metric) is None and not definition.derived_from:
            raise ValueError(f"{metric} is not published for the {service.label}")
        where = _service_where(service)
        token = service.cache_token
    key = _key(
        "metric",
        environment.pk,
        environment.service_arn,
        token,
        metric,
        stat,
        version,
        window.start,
        window.end,
        window.period,
        settings.CLOUDWATCH_PERCENTILES_NAMESPACE,
    )
    axis = window.timestamps

    def compute() -> dict[str, Any]:
        queries = _Queries(window.period)
        if _series_values(definition, stat, where, queries, None, axis) is None:
            raise ValueError(f"{metric} is not published for this environment's service")
        result = cloudwatch.get_metric_data(
            queries=queries.all(), start=window.start, end=window.end
        )
        values = _series_values(definition, stat, where, queries, result.series, axis)
        assert values is not None
        return {
            "metric": metric,
            "stat": stat,
            "unit": definition.unit,
            "version": version if definition.inference else None,
            "period": window.period,
            "points": [
                [_from_epoch(t).isoformat().replace("+00:00", "Z"), v]
                for t, v in zip(axis, values, strict=True)
                if v is not None
            ],
        }

    answer, _cached = shared_answer(key, window.refresh or 3600, compute)
    markers = deployment_markers(environment=environment, start=window.start, end=window.end)
    return {
        **answer,
        "deployments": [
            {
                "at": m.at.isoformat().replace("+00:00", "Z"),
                "version": m.version,
                "deployment_id": m.deployment_id,
            }
            for m in markers
        ],
    }


# --- Before / after a deployment -------------------------------------------------

COMPARISON_WINDOW = dt.timedelta(hours=1)


def _window_totals(
    service: MonitoredService, start: dt.datetime, end: dt.datetime, ttl: int
) -> dict[str, float | None]:
    span = (end - start).total_seconds()
    period = max(60, math.ceil(span / 60) * 60)
    key = _key(
        "totals", service.cache_token, start, end, period, settings.CLOUDWATCH_PERCENTILES_NAMESPACE
    )
    wanted = {"requests": ("Requests", "Sum"), "errors": ("5xxStatusResponses", "Sum")}
    wanted["p99"] = ("RequestLatency", "p99")

    def compute() -> dict[str, float | None]:
        queries = _Queries(period)
        ids: dict[str, tuple[list[str], MetricSource]] = {}
        for name, (metric, stat) in wanted.items():
            source = service.source(metric)
            if source is None:
                raise ValueError(f"the {service.label} publishes no {metric}")
            ids[name] = (
                [
                    queries.add(
                        catalog.metric_stat(
                            namespace=source.namespace,
                            metric_name=source.metric_name,
                            dimensions=dims,
                            stat=stat,
                            period=period,
                        )
                    )
                    for dims in source.dimension_sets
                ],
                source,
            )
        result = cloudwatch.get_metric_data(queries=queries.all(), start=start, end=end)

        def values(name: str) -> list[float]:
            qids, source = ids[name]
            found = [result.series.get(qid) for qid in qids]
            return [v * source.scale for s in found if s is not None for v in s.values]

        requests = sum(values("requests"))
        errors = sum(values("errors"))
        p99s = values("p99")
        return {
            # per minute: the hour before and the minutes after so far compare
            "requests": round(requests / (span / 60), 2) if span > 0 else None,
            "error_rate": round(100.0 * errors / requests, 3) if requests else None,
            "p99": round(max(p99s), 3) if p99s else None,
        }

    answer, _cached = shared_answer(key, ttl, compute)
    return dict(answer)


def deployment_comparison(
    *, deployment: Deployment, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Requests, 5xx rate and p99 latency in the hour before the deployment went
    live and in the hour after (or as much of it as has passed).

    Two GetMetricData calls (one per window, each one period long, so AWS
    computes the percentile over the whole window); the finished windows are
    cached for an hour. Raises AwsError, NotAServiceArn, and ValueError when
    the service publishes no request metrics (an ECS service without a load
    balancer).
    """
    now = now or timezone.now()
    live_at = deployment_live_at(deployment=deployment)
    if live_at is None:
        return {"live_at": None, "rows": []}
    service = environment_service(environment=deployment.environment)
    if service.source("Requests") is None:
        raise ValueError(
            f"the {service.label} publishes no request metrics (it has no load balancer)"
        )
    minute = 60
    pivot = _from_epoch(math.floor(live_at.timestamp() / minute) * minute)
    before = _window_totals(service, pivot - COMPARISON_WINDOW, pivot, 3600)
    after_end = min(now, pivot + COMPARISON_WINDOW)
    after_end = _from_epoch(math.floor(after_end.timestamp() / minute) * minute)
    after: dict[str, float | None] | None = None
    if after_end - pivot >= dt.timedelta(minutes=1):
        finished = after_end >= pivot + COMPARISON_WINDOW
        after = _window_totals(service, pivot, after_end, 3600 if finished else 30)
    rows = []
    for name, label, unit, lower_is_better in (
        ("requests", "Requests / min", "", None),
        ("error_rate", "5xx rate", "%", True),
        ("p99", "p99 latency", "ms", True),
    ):
        b = before.get(name)
        a = after.get(name) if after is not None else None
        change = None
        worse = False
        if a is not None and b is not None and b != 0:
            change = round(100.0 * (a - b) / b, 1)
        if lower_is_better and a is not None and b is not None:
            worse = a > b * 1.1 and a - b > (0.5 if unit == "%" else 5)
        rows.append(
            {
                "name": name,
                "label": label,
                "unit": unit,
                "before": b,
                "after": a,
                "change": change,
                "worse": worse,
            }
        )
    minutes_after = int((after_end - pivot).total_seconds() // 60) if after is not None else 0
    return {
        "live_at": pivot,
        "before_start": pivot - COMPARISON_WINDOW,
        "after_end": after_end,
        "minutes_after": minutes_after,
        "rows": rows,
    }
