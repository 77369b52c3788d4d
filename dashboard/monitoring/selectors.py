"""Reads about monitoring: settings, alarm states, the bake window, deployment markers.

The deployment reconciler calls ``alarms_firing`` and ``bake_minutes``; the
pages call the rest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.urls import reverse

from dashboard.aws import cloudwatch
from dashboard.deployments.models import Deployment, Environment
from dashboard.monitoring.catalog import MonitoredService
from dashboard.monitoring.discovery import monitored_service
from dashboard.monitoring.models import MonitoringSettings

ERROR_RATE_ALARM = "5xx-rate"
LATENCY_ALARM = "p99-latency"
ALARM_KINDS = {
    ERROR_RATE_ALARM: "5xx error rate",
    LATENCY_ALARM: "p99 latency",
}


@dataclass(frozen=True)
class AlarmState:
    """One of an environment's alarms as CloudWatch reports it now."""

    name: str
    kind: str  # ERROR_RATE_ALARM or LATENCY_ALARM ("" if the name is not ours)
    state: str  # OK, ALARM, INSUFFICIENT_DATA, or MISSING (not in CloudWatch)
    reason: str
    updated_at: dt.datetime | None

    @property
    def firing(self) -> bool:
        return self.state == "ALARM"

    @property
    def title(self) -> str:
        return ALARM_KINDS.get(self.kind, self.name)


def monitoring_settings_get(*, environment: Environment) -> MonitoringSettings:
    """The environment's settings; an unsaved row with the defaults if it has none."""
    found = MonitoringSettings.objects.filter(environment=environment).first()
    return found if found is not None else MonitoringSettings(environment=environment)


def alarm_name(*, environment: Environment, kind: str) -> str:
    """The CloudWatch name of one of the environment's alarms."""
    prefix = settings.CLOUDWATCH_ALARM_PREFIX
    return f"{prefix}-{environment.model_name}-{environment.name}-{kind}"


def _kind_of(environment: Environment, name: str) -> str:
    for kind in ALARM_KINDS:
        if name == alarm_name(environment=environment, kind=kind):
            return kind
    return ""


def _states_key(environment: Environment) -> str:
    return f"monitoring:alarms:v1:{environment.pk}"


def alarm_states(*, environment: Environment) -> list[AlarmState]:
    """Every alarm the dashboard created for the environment, with its state now
    (DescribeAlarms; reused for MONITORING_ALARM_CACHE_SECONDS). An alarm that
    was deleted behind the dashboard's back reads as MISSING. Raises AwsError."""
    row = MonitoringSettings.objects.filter(environment=environment).first()
    names = list(row.alarm_names) if row is not None and row.alarms_enabled else []
    if not names:
        return []
    ttl = settings.MONITORING_ALARM_CACHE_SECONDS
    key = _states_key(environment)
    cached = cache.get(key) if ttl else None
    if cached is not None and cached.get("names") == names:
        return [AlarmState(**state) for state in cached["states"]]
    found = {a.name: a for a in cloudwatch.describe_alarms(names=names)}
    states = []
    for name in names:
        info = found.get(name)
        states.append(
            AlarmState(
                name=name,
                kind=_kind_of(environment, name),
                state=info.state if info else "MISSING",
                reason=info.reason if info else "the alarm does not exist in CloudWatch",
                updated_at=info.updated_at if info else None,
            )
        )
    if ttl:
        cache.set(key, {"names": names, "states": [asdict(s) for s in states]}, ttl)
    return states


def alarms_firing(*, environment: Environment) -> list[AlarmState]:
    """The environment's alarms in state ALARM now, with CloudWatch's reason.

    For the deployment reconciler's bake window: any entry means roll back.
    Answers come from one DescribeAlarms call, reused for
    ``MONITORING_ALARM_CACHE_SECONDS`` (default 10 s). An environment without
    alarms has none firing. Raises AwsError (AwsTransientError when worth
    retrying): treat that as "unknown" and look again on the next pass.
    """
    return [s for s in alarm_states(environment=environment) if s.firing]


def alarm_states_forget(*, environment: Environment) -> None:
    """Drop the cached states (after the dashboard changed or tested an alarm)."""
    cache.delete(_states_key(environment))


def bake_minutes(*, environment: Environment) -> int:
    """How long a deployment must stay healthy after going live before it is done.

    0 when the environment has no alarms to watch (alarms off or none created),
    since the bake window can only end early through an alarm.
    """
    row = MonitoringSettings.objects.filter(environment=environment).first()
    if row is None or not row.alarms_enabled or not row.alarm_names:
        return 0
    return int(row.bake_minutes)


def inference_dimensions(*, environment: Environment) -> tuple[tuple[str, str], ...]:
    """The dimensions (besides Version) that pick this environment's inference
    metrics: Model, plus the environment's own setting, else
    ``{INFERENCE_METRICS_ENVIRONMENT_DIMENSION: <environment name>}``."""
    row = MonitoringSettings.objects.filter(environment=environment).first()
    extra: dict[str, str] = {}
    if row is not None and row.inference_dimensions:
        extra = {str(k): str(v) for k, v in row.inference_dimensions.items()}
    elif settings.INFERENCE_METRICS_ENVIRONMENT_DIMENSION:
        extra = {settings.INFERENCE_METRICS_ENVIRONMENT_DIMENSION: environment.name}
    return tuple(sorted({**extra, "Model": environment.model_name}.items()))


def environment_service(*, environment: Environment) -> MonitoredService:
    """The environment's service (App Runner or ECS) as the monitoring pages see
    it: where each metric and its logs are. Raises NotAServiceArn, and AwsError
    when ECS does not answer (ECS services are looked up, briefly cached)."""
    return monitored_service(environment=environment)


# --- Deployment markers ------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentMarker:
    """When a deployment put its version live: a vertical line on every chart."""

    deployment_id: int
    at: dt.datetime
    version: str
    kind: str
    url: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.deployment_id,
            "at": self.at.timestamp(),
            "version": self.version,
            "kind": self.kind,
            "url": self.url,
        }


# Deployments record when their revision took the traffic (``live_at``) in the
# reworked deployment model; before it, a succeeded deployment's ``finished_at``
# is the nearest thing. Decided once, from the model itself.
_HAS_LIVE_AT = any(f.name == "live_at" for f in Deployment._meta.get_fields())


def _went_live() -> tuple[str, Q]:
    """The field that says when a deployment's version went live, and which
    deployments did (a version that went live and was rolled back later still
    went live: its marker stays)."""
    if _HAS_LIVE_AT:
        return "live_at", Q(live_at__isnull=False)
    return "finished_at", Q(status=Deployment.Status.SUCCEEDED, finished_at__isnull=False)


def deployment_markers(
    *, environment: Environment, start: dt.datetime, end: dt.datetime
) -> list[DeploymentMarker]:
    """Deployments of the environment that went live in [start, end], oldest first."""
    field, went_live = _went_live()
    rows = (
        Deployment.objects.filter(went_live, environment=environment)
        .filter(**{f"{field}__gte": start, f"{field}__lte": end})
        .order_by(field, "id")
        .values_list("id", field, "to_version", "kind")
    )
    return [
        DeploymentMarker(
            deployment_id=pk,
            at=at,
            version=version,
            kind=kind,
            url=reverse("deployment", kwargs={"deployment_id": pk}),
        )
        for pk, at, version, kind in rows
    ]


def deployment_live_at(*, deployment: Deployment) -> dt.datetime | None:
    """When the deployment's version went live, or None if it has not (yet)."""
    field, went_live = _went_live()
    if not Deployment.objects.filter(went_live, pk=deployment.pk).exists():
        return None
    value = getattr(deployment, field)
    return value if isinstance(value, dt.datetime) else None


def version_live_at(*, environment: Environment, at: dt.datetime) -> str | None:
    """The version the environment served at ``at``, by its deployments: the last
    one live by then, else what the first one after it replaced, else the
    pointer's version as last known (an environment never deployed)."""
    field, went_live = _went_live()
    live = Deployment.objects.filter(went_live, environment=environment)
    before = (
        live.filter(**{f"{field}__lte": at})
        .order_by(f"-{field}", "-id")
        .values_list("to_version", flat=True)
        .first()
    )
    if before:
        return before
    after = (
        live.filter(**{f"{field}__gt": at})
        .order_by(field, "id")
        .values_list("from_version", flat=True)
        .first()
    )
    return after or environment.promoted_version or None


def versions_in_window(
    *, environment: Environment, start: dt.datetime, end: dt.datetime, limit: int = 5
) -> list[str]:
    """Versions served at some point in [start, end], oldest first (the newest ``limit``)."""
    versions: list[str] = []
    first = version_live_at(environment=environment, at=start)
    if first:
        versions.append(first)
    for marker in deployment_markers(environment=environment, start=start, end=end):
        if marker.version in versions:
            versions.remove(marker.version)
        versions.append(marker.version)
    return versions[-limit:]
