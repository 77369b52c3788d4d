"""API: an environment's CloudWatch metrics and logs (CONTRACT.md section 4)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import VIEWER
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import environment_get
from dashboard.monitoring import catalog, logview, metrics
from dashboard.monitoring.forms import parse_instant
from dashboard.registry.apis import model_or_404
from dashboard.registry.names import validate_environment_name

router = Router(tags=["monitoring"])


class DeploymentMarkerOut(Schema):
    at: str = Field(..., description="When the deployment's version went live (UTC, ISO 8601).")
    version: str
    deployment_id: int


class MetricOut(Schema):
    metric: str
    stat: str
    unit: str
    version: str | None = Field(None, description="The model version, for inference metrics.")
    period: int = Field(..., description="Seconds per point.")
    points: list[tuple[str, float]] = Field(
        ..., description="[time (UTC, ISO 8601, start of the period), value], oldest first"
    )
    deployments: list[DeploymentMarkerOut]


class MetricQuery(Schema):
    metric: str = Field(
        ...,
        description="One of: " + ", ".join(catalog.METRICS),
        max_length=64,
    )
    stat: str | None = Field(
        None,
        description="Sum, Average, Minimum, Maximum, SampleCount or a percentile such as p99 "
        "(default: the metric's usual one)",
        max_length=16,
    )
    start: str | None = Field(None, description="ISO 8601 (default: end minus 1 hour)")
    end: str | None = Field(None, description="ISO 8601 (default: now)")
    period: int | None = Field(
        None, description="Seconds per point, a multiple of 60 (default: from the range)"
    )
    version: str | None = Field(
        None, description="Model version, for inference metrics (default: the promoted one)"
    )


class LogEventOut(Schema):
    at: str
    stream: str
    message: str


class LogsOut(Schema):
    events: list[LogEventOut] = Field(..., description="Newest first.")
    next: str | None = Field(None, description="Pass as next= for the older events.")


class LogsQuery(Schema):
    q: str = Field("", description="CloudWatch Logs filter pattern", max_length=1024)
    start: str | None = Field(None, description="ISO 8601 (default: end minus 1 hour)")
    end: str | None = Field(None, description="ISO 8601 (default: now)")
    stream: str = Field(
        "application",
        description="application (every instance or task), service (App Runner's events and "
        "deployments; ECS has none) or one stream name (instance/..., events, "
        "deployment/<operation-id>; on ECS <prefix>/<container>/<task-id>)",
        max_length=512,
    )
    next: str | None = Field(None, description="The next token of the previous answer")
    limit: int = Field(logview.PAGE_LINES, ge=1, le=1000)


def _environment_or_404(model: str, name: str) -> Environment:
    model_or_404(model)
    validate_environment_name(name)
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


def _times(raw_start: str | None, raw_end: str | None) -> tuple[dt.datetime, dt.datetime]:
    try:
        end = parse_instant(raw_end, "end") if raw_end else timezone.now()
        start = parse_instant(raw_start, "start") if raw_start else end - dt.timedelta(hours=1)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc
    return start, end


@router.get(
    "models/{model}/environments/{environment}/metrics",
    response=MetricOut,
    summary="A CloudWatch metric of the environment's service, with deployment markers",
)
def metric(
    request: HttpRequest, model: str, environment: str, params: Query[MetricQuery]
) -> dict[str, Any]:
    api_require_role(request, VIEWER)
    env = _environment_or_404(model, environment)
    if params.metric not in catalog.METRICS:
        raise HttpError(
            400, f"unknown metric {params.metric!r}; known: {', '.join(catalog.METRICS)}"
        )
    start, end = _times(params.start, params.end)
    try:
        window = metrics.window_custom(start=start, end=end, period=params.period)
        return metrics.metric_points(
            environment=env,
            metric=params.metric,
            stat=params.stat,
            window=window,
            version=params.version,
        )
    except (metrics.WindowError, catalog.NotAServiceArn, ValueError) as exc:
        raise HttpError(400, str(exc)) from exc


@router.get(
    "models/{model}/environments/{environment}/logs",
    response=LogsOut,
    summary="CloudWatch Logs events of the environment's service, newest first",
)
def logs(
    request: HttpRequest, model: str, environment: str, params: Query[LogsQuery]
) -> dict[str, Any]:
    api_require_role(request, VIEWER)
    env = _environment_or_404(model, environment)
    start, end = _times(params.start, params.end)
    try:
        result = logview.logs_read(
            environment=env,
            stream=params.stream,
            pattern=params.q,
            start=start,
            end=end,
            next_token=params.next,
            limit=params.limit,
        )
    except (logview.LogQueryError, catalog.NotAServiceArn) as exc:
        raise HttpError(400, str(exc)) from exc
    return {"events": [line.as_json() for line in result.lines], "next": result.next_token}
