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

An ECS service (Express Mode or classic) publishes CPU and memory in
``AWS/ECS`` (``ClusterName`` + ``ServiceName``), its running task count in
``ECS/ContainerInsights`` when Container Insights is on, and its requests
through its Application Load Balancer: ``AWS/ApplicationELB`` with the
``LoadBalancer`` + ``TargetGroup`` dimensions (the ARN suffixes
``app/<name>/<id>`` and ``targetgroup/<name>/<id>``). Its logs are wherever
the container's awslogs driver sends them (streams
``<prefix>/<container>/<task-id>``). ``MonitoredService`` says, for one
environment, where each charted metric and its logs live; it is built from
names only here, and from what ECS and ELB report in ``discovery``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from django.conf import settings

from dashboard.aws.cloudwatch import Dimensions, MetricStat

APPRUNNER_NAMESPACE = "AWS/AppRunner"
ECS_NAMESPACE = "AWS/ECS"
CONTAINER_INSIGHTS_NAMESPACE = "ECS/ContainerInsights"
ALB_NAMESPACE = "AWS/ApplicationELB"
_SERVICE_ARN = re.compile(
    r"^arn:aws[a-z-]*:apprunner:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"service/(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,39})/(?P<id>[0-9a-f]{32})$"
)


class NotAServiceArn(ValueError):
    """The environment names no service this dashboard can monitor (not an App
    Runner or ECS service ARN, or a service that does not exist)."""


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
    # ECS only (Container Insights).
    MetricDef("RunningTasks", "RunningTaskCount", "Average", "count", "Running tasks"),
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


# --- Where an environment's metrics and logs are ------------------------------------


@dataclass(frozen=True)
class MetricSource:
    """Where one catalog metric of a service lives.

    Several dimension sets (an ECS service whose traffic moves between two
    target groups, blue/green or an Express canary) are queried separately in
    the same GetMetricData and combined per period: ``sum`` for counts and
    task numbers, ``max`` otherwise (for percentiles of two target groups at
    once an upper bound, exact whenever only one of them has traffic).
    ``scale`` converts to the catalog's unit (the ALB reports seconds).
    """

    namespace: str
    metric_name: str
    dimension_sets: tuple[Dimensions, ...]
    scale: float = 1.0
    combine: str = ""  # "sum", "max"; "": sum for Sum and SampleCount, else max

    def combine_for(self, stat: str) -> str:
        return self.combine or ("sum" if stat in ("Sum", "SampleCount") else "max")


@dataclass(frozen=True)
class LogLayout:
    """Where a service's logs are: the application's group (and the prefix of
    its streams), and the platform's own service group if it has one."""

    application_group: str
    application_prefix: str | None  # None: every stream of the group
    service_group: str | None = None


@dataclass(frozen=True)
class MonitoredService:
    """One environment's service as the monitoring pages see it."""

    platform: str  # "apprunner" or "ecs"
    label: str  # "App Runner service iris-staging" ...
    description: str  # one line for the metrics page: what is charted from where
    sources: dict[str, MetricSource] = field(default_factory=dict)
    charts: tuple[ChartDef, ...] = ()
    logs: LogLayout | None = None
    logs_problem: str = ""  # why ``logs`` is None
    notes: tuple[str, ...] = ()  # shown on the metrics page (e.g. no load balancer)
    # The identity (App Runner) or cluster/service names (ECS), for templates.
    names: dict[str, str] = field(default_factory=dict)

    def source(self, key: str) -> MetricSource | None:
        return self.sources.get(key)

    @property
    def cache_token(self) -> str:
        """What, besides the environment and window, decides the metrics' answer."""
        return repr(sorted(self.sources.items()))


def apprunner_service(identity: ServiceIdentity) -> MonitoredService:
    """An App Runner service: every service metric in ``AWS/AppRunner``."""
    sources = {
        m.key: MetricSource(APPRUNNER_NAMESPACE, m.metric_name, (identity.dimensions,))
        for m in _METRICS
        if not m.inference and not m.derived_from and m.key != "RunningTasks"
    }
    return MonitoredService(
        platform="apprunner",
        label=f"App Runner service {identity.name}",
        description=(
            f"App Runner service {identity.name} ({identity.id}, {identity.region}), "
            f"CloudWatch namespace {APPRUNNER_NAMESPACE}."
        ),
        sources=sources,
        charts=CHARTS,
        logs=LogLayout(
            application_group=identity.application_log_group,
            application_prefix="instance/",
            service_group=identity.service_log_group,
        ),
        names={"name": identity.name, "id": identity.id, "region": identity.region},
    )


_ARN_SUFFIX = re.compile(r"^arn:aws[a-z-]*:elasticloadbalancing:[^:]*:\d*:(?P<suffix>.+)$")


def load_balancer_dimension(arn: str) -> str:
    """``app/<name>/<id>`` of an ALB ARN (CloudWatch's ``LoadBalancer`` value)."""
    match = _ARN_SUFFIX.match(arn or "")
    suffix = match["suffix"] if match else ""
    if not suffix.startswith("loadbalancer/app/"):
        raise ValueError(f"{arn!r} is not an Application Load Balancer ARN")
    return suffix.removeprefix("loadbalancer/")


def target_group_dimension(arn: str) -> str:
    """``targetgroup/<name>/<id>`` of a target group ARN (``TargetGroup``'s value)."""
    match = _ARN_SUFFIX.match(arn or "")
    suffix = match["suffix"] if match else ""
    if not suffix.startswith("targetgroup/"):
        raise ValueError(f"{arn!r} is not a target group ARN")
    return suffix


# What changes on ECS: the request charts' wording (the load balancer measures
# them), tasks instead of instances, and no concurrency (App Runner only).
_ECS_HELP = {
    "requests": "Requests the load balancer sent to the service's target group, per period.",
    "latency": "Time from the load balancer sending a request to the service until the "
    "response headers came back (TargetResponseTime).",
}
_ECS_TASKS = ChartDef(
    "instances",
    "Tasks",
    "tasks",
    (
        SeriesDef("ActiveInstances", "Maximum", "Healthy tasks"),
        SeriesDef("RunningTasks", "Average", "Running tasks"),
    ),
    "Healthy tasks: the load balancer's healthy targets. Running tasks: ECS's count, "
    "published only with Container Insights on the cluster.",
)
ECS_CHARTS: tuple[ChartDef, ...] = tuple(
    _ECS_TASKS if c.id == "instances" else replace(c, help=_ECS_HELP.get(c.id, c.help))
    for c in CHARTS
    if c.id != "concurrency"
)


def ecs_service(
    *,
    cluster: str,
    service: str,
    target_groups: list[tuple[str, str]],
    logs: LogLayout | None,
    logs_problem: str = "",
    notes: tuple[str, ...] = (),
    express: bool = False,
) -> MonitoredService:
    """An ECS service: ``target_groups`` are (target group ARN, load balancer
    ARN) pairs of its Application Load Balancer (none: no request charts)."""
    ecs_dims: Dimensions = (("ClusterName", cluster), ("ServiceName", service))
    sources = {
        "CPUUtilization": MetricSource(ECS_NAMESPACE, "CPUUtilization", (ecs_dims,)),
        "MemoryUtilization": MetricSource(ECS_NAMESPACE, "MemoryUtilization", (ecs_dims,)),
        "RunningTasks": MetricSource(
            CONTAINER_INSIGHTS_NAMESPACE, "RunningTaskCount", (ecs_dims,), combine="sum"
        ),
    }
    alb_dims = tuple(
        (
            ("LoadBalancer", load_balancer_dimension(lb)),
            ("TargetGroup", target_group_dimension(tg)),
        )
        for tg, lb in target_groups
    )
    if alb_dims:
        for key, name in (
            ("Requests", "RequestCount"),
            ("2xxStatusResponses", "HTTPCode_Target_2XX_Count"),
            ("4xxStatusResponses", "HTTPCode_Target_4XX_Count"),
            ("5xxStatusResponses", "HTTPCode_Target_5XX_Count"),
        ):
            sources[key] = MetricSource(ALB_NAMESPACE, name, alb_dims)
        sources["RequestLatency"] = MetricSource(
            ALB_NAMESPACE, "TargetResponseTime", alb_dims, scale=1000.0
        )
        sources["ActiveInstances"] = MetricSource(
            ALB_NAMESPACE, "HealthyHostCount", alb_dims, combine="sum"
        )
    kind = "ECS Express Mode service" if express else "ECS service"
    where = f"{ECS_NAMESPACE} (cluster {cluster})"
    if alb_dims:
        groups = ", ".join(tg for (_lb, (_n, tg)) in alb_dims)
        where += f", {ALB_NAMESPACE} (target group {groups})"
    return MonitoredService(
        platform="ecs",
        label=f"{kind} {service}",
        description=f"{kind} {service}, CloudWatch namespaces {where}.",
        sources=sources,
        charts=ECS_CHARTS,
        logs=logs,
        logs_problem=logs_problem,
        notes=notes,
        names={"cluster": cluster, "name": service},
    )
