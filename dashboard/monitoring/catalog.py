"""What is charted and where it lives in CloudWatch: names only, no I/O.

App Runner publishes its service metrics in ``AWS/AppRunner`` with the
dimensions ``ServiceName`` and ``ServiceID`` (both read from the service ARN,
``arn:aws:apprunner:<region>:<account>:service/<name>/<id>``) and writes logs
to ``/aws/apprunner/<name>/<id>/application`` (stream ``instance/<id>``) and
``/aws/apprunner/<name>/<id>/service`` (streams ``events`` and
``deployment/<operation-id>``). The inference service's own metrics come from
the EMF lines of its log, in ``settings.INFERENCE_METRICS_NAMESPACE`` with
``Model`` and ``Version`` dimensions (plus whatever the service's
``EMF_DIMENSIONS`` add, by default ``Environment``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from dashboard.aws.cloudwatch import Dimensions, MetricStat

APPRUNNER_NAMESPACE = "AWS/AppRunner"
_SERVICE_ARN = re.compile(
    r"^arn:aws[a-z-]*:apprunner:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"service/(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,39})/(?P<id>[0-9a-f]{32})$"
)


class NotAServiceArn(ValueError):
    """The environment's service ARN is not an App Runner service ARN."""


@dataclass(frozen=True)
class ServiceIdentity:
    """An App Runner service as CloudWatch names it."""

    region: str
    account: str
    name: str
    id: str

    @property
    def dimensions(self) -> Dimensions:
        return (("ServiceName", self.name), ("ServiceID", self.id))

    @property
    def application_log_group(self) -> str:
        return f"/aws/apprunner/{self.name}/{self.id}/application"

    @property
    def service_log_group(self) -> str:
        return f"/aws/apprunner/{self.name}/{self.id}/service"


def service_identity(service_arn: str) -> ServiceIdentity:
    """Parse an App Runner service ARN; raise NotAServiceArn naming the problem."""
    match = _SERVICE_ARN.match(service_arn or "")
    if match is None:
        raise NotAServiceArn(
            f"{service_arn!r} is not an App Runner service ARN "
            "(arn:aws:apprunner:<region>:<account>:service/<name>/<32-hex id>)"
        )
    return ServiceIdentity(
        region=match["region"], account=match["account"], name=match["name"], id=match["id"]
    )


# --- Metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """A metric the API and the charts know, by its API name (``key``)."""

    key: str
    metric_name: str
    default_stat: str
    unit: str  # what the values are in, as shown ("count", "ms", "%")
    label: str
    inference: bool = False  # in the inference namespace, split by Version
    additive: bool = False  # a count: periods without data points mean zero
    derived_from: tuple[str, str] | None = None  # (numerator, denominator) keys, as a %

    @property
    def namespace(self) -> str:
        return settings.INFERENCE_METRICS_NAMESPACE if self.inference else APPRUNNER_NAMESPACE


_METRICS = [
    MetricDef("Requests", "Requests", "Sum", "count", "Requests", additive=True),
    MetricDef("2xxStatusResponses", "2xxStatusResponses", "Sum", "count", "2xx", additive=True),
    MetricDef("4xxStatusResponses", "4xxStatusResponses", "Sum", "count", "4xx", additive=True),
    MetricDef("5xxStatusResponses", "5xxStatusResponses", "Sum", "count", "5xx", additive=True),
    MetricDef(
        "ErrorRate",
        "",
        "Sum",
        "%",
        "5xx rate",
        derived_from=("5xxStatusResponses", "Requests"),
    ),
    MetricDef(
        "ClientErrorRate",
        "",
        "Sum",
        "%",
        "4xx rate",
        derived_from=("4xxStatusResponses", "Requests"),
    ),
    MetricDef("RequestLatency", "RequestLatency", "p99", "ms", "Latency"),
    MetricDef("ActiveInstances", "ActiveInstances", "Maximum", "count", "Active instances"),
    MetricDef("CPUUtilization", "CPUUtilization", "Average", "%", "CPU"),
    MetricDef("MemoryUtilization", "MemoryUtilization", "Average", "%", "Memory"),
    MetricDef("Concurrency", "Concurrency", "Maximum", "count", "Concurrency"),
    # The inference service's EMF metrics (docs/inference.md, "Metrics for CloudWatch").
    MetricDef("Predictions", "Predictions", "Sum", "count", "Predictions", True, True),
    MetricDef("PredictionLatency", "PredictionLatency", "p99", "ms", "Prediction latency", True),
    MetricDef("BatchSize", "BatchSize", "Average", "examples", "Batch size", True),
    MetricDef("Errors", "Errors", "Sum", "count", "Errors (5xx)", True, True),
    MetricDef("ClientErrors", "ClientErrors", "Sum", "count", "Client errors (4xx)", True, True),
    MetricDef("ModelLoadTime", "ModelLoadTime", "Maximum", "s", "Model load time", True),
]
METRICS: dict[str, MetricDef] = {m.key: m for m in _METRICS}

_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,2})?|100)$")
STANDARD_STATS = ("Sum", "Average", "Minimum", "Maximum", "SampleCount")


def valid_stat(stat: str) -> bool:
    """A statistic this dashboard asks CloudWatch for: the five standard ones or pNN(.NN)."""
    return stat in STANDARD_STATS or bool(_PERCENTILE.match(stat))


def is_percentile(stat: str) -> bool:
    return bool(_PERCENTILE.match(stat))


def metric_stat(
    *, namespace: str, metric_name: str, dimensions: Dimensions, stat: str, period: int
) -> MetricStat:
    """The MetricStat that answers ``stat`` of a metric.

    Percentiles come from CloudWatch itself, except where it cannot compute
    them (``CLOUDWATCH_PERCENTILES_NAMESPACE`` set: the local stack, whose
    App Runner stand-in publishes each window's p50/p90/p99 as their own
    metric; averaged over the period, an approximation CloudWatch does not need).
    """
    precomputed = settings.CLOUDWATCH_PERCENTILES_NAMESPACE
    if precomputed and is_percentile(stat):
        return MetricStat(
            namespace=precomputed,
            metric_name=metric_name,
            dimensions=(*dimensions, ("SourceNamespace", namespace), ("Statistic", stat)),
            stat="Average",
            period=period,
        )
    return MetricStat(
        namespace=namespace,
        metric_name=metric_name,
        dimensions=dimensions,
        stat=stat,
        period=period,
    )


@dataclass(frozen=True)
class SeriesDef:
    metric: str  # a METRICS key
    stat: str
    label: str


@dataclass(frozen=True)
class ChartDef:
    id: str
    title: str
    unit: str
    series: tuple[SeriesDef, ...]
    help: str = ""
    per_version: bool = False  # one line per model version (inference metrics)


CHARTS: tuple[ChartDef, ...] = (
    ChartDef(
        "requests",
        "Requests",
        "requests",
        (SeriesDef("Requests", "Sum", "Requests"),),
        "Requests the service answered, per period.",
    ),
    ChartDef(
        "status",
        "Responses by status",
        "responses",
        (
            SeriesDef("2xxStatusResponses", "Sum", "2xx"),
            SeriesDef("4xxStatusResponses", "Sum", "4xx"),
            SeriesDef("5xxStatusResponses", "Sum", "5xx"),
        ),
    ),
    ChartDef(
        "error_rate",
        "Error rate",
        "%",
        (SeriesDef("ErrorRate", "Sum", "5xx"), SeriesDef("ClientErrorRate", "Sum", "4xx")),
        "Share of requests answered 5xx (the service failed) and 4xx (the client "
        "sent something wrong). Alarms watch 5xx only.",
    ),
    ChartDef(
        "latency",
        "Request latency",
        "ms",
        (
            SeriesDef("RequestLatency", "p50", "p50"),
            SeriesDef("RequestLatency", "p90", "p90"),
            SeriesDef("RequestLatency", "p99", "p99"),
        ),
    ),
    ChartDef(
        "instances",
        "Active instances",
        "instances",
        (SeriesDef("ActiveInstances", "Maximum", "Active instances"),),
    ),
    ChartDef(
        "concurrency",
        "Concurrency",
        "requests",
        (SeriesDef("Concurrency", "Maximum", "Max concurrent requests"),),
    ),
    ChartDef("cpu", "CPU", "%", (SeriesDef("CPUUtilization", "Average", "CPU"),)),
    ChartDef("memory", "Memory", "%", (SeriesDef("MemoryUtilization", "Average", "Memory"),)),
    ChartDef(
        "predictions",
        "Predictions by version",
        "examples",
        (SeriesDef("Predictions", "Sum", "Predictions"),),
        per_version=True,
    ),
    ChartDef(
        "prediction_latency",
        "Prediction latency p99 by version",
        "ms",
        (SeriesDef("PredictionLatency", "p99", "p99"),),
        per_version=True,
    ),
    ChartDef(
        "batch_size",
        "Batch size by version",
        "examples",
        (SeriesDef("BatchSize", "Average", "Average batch"),),
        per_version=True,
    ),
    ChartDef(
        "prediction_errors",
        "Prediction errors (5xx) by version",
        "errors",
        (SeriesDef("Errors", "Sum", "Errors"),),
        "/predict answers with status 500 or more; client errors (4xx) are not counted here.",
        per_version=True,
    ),
    ChartDef(
        "model_load",
        "Model load time by version",
        "s",
        (SeriesDef("ModelLoadTime", "Maximum", "Load time"),),
        per_version=True,
    ),
)


# --- Time ranges ----------------------------------------------------------------


@dataclass(frozen=True)
class RangePreset:
    key: str
    label: str
    seconds: int
    period: int  # seconds per data point
    refresh: int  # seconds between refreshes (and how long an answer is reused)


RANGES: dict[str, RangePreset] = {
    r.key: r
    for r in (
        RangePreset("1h", "1 hour", 3600, 60, 15),
        RangePreset("6h", "6 hours", 6 * 3600, 300, 30),
        RangePreset("24h", "24 hours", 24 * 3600, 300, 60),
        RangePreset("7d", "7 days", 7 * 24 * 3600, 3600, 300),
    )
}
DEFAULT_RANGE = "1h"


def period_for(seconds: float) -> int:
    """A period for a custom range: whole minutes, at most ~1440 points per series."""
    for period in (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400):
        if seconds / period <= 1440:
            return period
    return 86400
