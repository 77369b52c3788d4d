"""Writes: an environment's monitoring settings and the CloudWatch alarms they imply."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from dashboard.aws import cloudwatch
from dashboard.aws.cloudwatch import AlarmSpec, MetricQuery
from dashboard.deployments.models import Environment
from dashboard.monitoring import catalog
from dashboard.monitoring.models import MonitoringSettings
from dashboard.monitoring.selectors import (
    ERROR_RATE_ALARM,
    LATENCY_ALARM,
    alarm_name,
    alarm_states_forget,
    environment_service,
)

EDITABLE_FIELDS = (
    "alarms_enabled",
    "bake_minutes",
    "error_rate_enabled",
    "error_rate_percent",
    "error_rate_min_requests",
    "latency_enabled",
    "latency_p99_ms",
    "evaluation_minutes",
    "datapoints_to_alarm",
    "inference_dimensions",
)
ALARM_PERIOD_SECONDS = 60


class MonitoringError(Exception):
    """The settings were refused (bad values) or CloudWatch refused the alarms."""


def alarm_specs(row: MonitoringSettings) -> list[AlarmSpec]:
    """The alarms the settings ask for (none when alarms are off).

    5xx RATE, not count: metric math over the service's Requests and
    5xxStatusResponses sums, so a busy service and a quiet one share a
    threshold; minutes with fewer than ``error_rate_min_requests`` requests
    count as 0. p99 latency: CloudWatch's own percentile of RequestLatency.
    Never 4xx: clients sending bad payloads must not roll back a good model.
    """
    if not row.alarms_enabled:
        return []
    environment = row.environment
    identity = environment_service(environment=environment)
    dims = identity.dimensions
    where = f"{environment.model_name}/{environment.name}"
    tags = (
        ("modeldeck:model", environment.model_name),
        ("modeldeck:environment", environment.name),
    )
    common: dict[str, Any] = {
        "comparison": "GreaterThanThreshold",
        "evaluation_periods": row.evaluation_minutes,
        "datapoints_to_alarm": row.datapoints_to_alarm,
        # No traffic is not an outage.
        "treat_missing_data": "notBreaching",
        "tags": tags,
    }
    specs = []
    if row.error_rate_enabled:
        requests = cloudwatch.MetricStat(
            namespace=catalog.APPRUNNER_NAMESPACE,
            metric_name="Requests",
            dimensions=dims,
            stat="Sum",
            period=ALARM_PERIOD_SECONDS,
        )
        errors = cloudwatch.MetricStat(
            namespace=catalog.APPRUNNER_NAMESPACE,
            metric_name="5xxStatusResponses",
            dimensions=dims,
            stat="Sum",
            period=ALARM_PERIOD_SECONDS,
        )
        minimum = max(1, row.error_rate_min_requests)
        specs.append(
            AlarmSpec(
                name=alarm_name(environment=environment, kind=ERROR_RATE_ALARM),
                description=(
                    f"ModelDeck: 5xx responses of {where} above {row.error_rate_percent:g}% of "
                    f"requests (minutes with under {minimum} requests count as 0). "
                    "During a deployment's bake window this rolls it back."
                ),
                threshold=float(row.error_rate_percent),
                metrics=(
                    MetricQuery(id="requests", stat=requests, return_data=False),
                    MetricQuery(id="errors", stat=errors, return_data=False),
                    MetricQuery(
                        id="rate",
                        expression=f"IF(requests >= {minimum}, 100 * errors / requests, 0)",
                        label="5xx rate (%)",
                    ),
                ),
                **common,
            )
        )
    if row.latency_enabled:
        specs.append(
            AlarmSpec(
                name=alarm_name(environment=environment, kind=LATENCY_ALARM),
                description=(
                    f"ModelDeck: p99 request latency of {where} above {row.latency_p99_ms} ms. "
                    "During a deployment's bake window this rolls it back."
                ),
                threshold=float(row.latency_p99_ms),
                metric=cloudwatch.MetricStat(
                    namespace=catalog.APPRUNNER_NAMESPACE,
                    metric_name="RequestLatency",
                    dimensions=dims,
                    stat="p99",
                    period=ALARM_PERIOD_SECONDS,
                ),
                **common,
            )
        )
    return specs


def _validate(row: MonitoringSettings) -> None:
    try:
        row.full_clean(exclude=["environment", "updated_by", "alarm_names"])
    except ValidationError as exc:
        problems = [f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()]
        raise MonitoringError("; ".join(problems)) from exc
    if row.datapoints_to_alarm > row.evaluation_minutes:
        raise MonitoringError(
            "datapoints_to_alarm: must be at most evaluation_minutes "
            f"({row.datapoints_to_alarm} > {row.evaluation_minutes})"
        )
    dims = row.inference_dimensions
    if not isinstance(dims, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in dims.items()
    ):
        raise MonitoringError("inference_dimensions: must map dimension names to non-empty strings")
    if len(dims) > 28 or {"Model", "Version"} & set(dims):
        raise MonitoringError(
            "inference_dimensions: at most 28 dimensions, and not Model or Version (always added)"
        )
    if row.alarms_enabled:
        try:
            environment_service(environment=row.environment)
        except catalog.NotAServiceArn as exc:
            raise MonitoringError(
                f"alarms need the environment's App Runner service: {exc}"
            ) from exc


def monitoring_settings_update(
    *, environment: Environment, user: Any, values: dict[str, Any]
) -> MonitoringSettings:
    """Save the environment's monitoring settings and make CloudWatch match them.

    Alarms are put (created or replaced) and the ones no longer wanted are
    deleted before the row is committed: if CloudWatch refuses, the settings
    stay as they were and MonitoringError says why.
    """
    unknown = set(values) - set(EDITABLE_FIELDS)
    if unknown:
        raise MonitoringError(f"unknown settings: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        row, _created = MonitoringSettings.objects.select_for_update().get_or_create(
            environment=environment
        )
        for name, value in values.items():
            setattr(row, name, value)
        _validate(row)
        _sync_alarms(row)
        row.updated_by = user if getattr(user, "is_authenticated", False) else None
        row.save()
    alarm_states_forget(environment=environment)
    return row


def alarms_sync(*, environment: Environment) -> MonitoringSettings:
    """Put the environment's alarms again as its settings say (e.g. after its
    service ARN changed, or someone edited them in the console)."""
    with transaction.atomic():
        row, _created = MonitoringSettings.objects.select_for_update().get_or_create(
            environment=environment
        )
        _sync_alarms(row)
        row.save(update_fields=["alarm_names", "alarms_synced_at", "updated_at"])
    alarm_states_forget(environment=environment)
    return row


def _sync_alarms(row: MonitoringSettings) -> None:
    specs = alarm_specs(row)
    try:
        for spec in specs:
            cloudwatch.put_metric_alarm(spec=spec)
        wanted = {spec.name for spec in specs}
        stale = [name for name in row.alarm_names or [] if name not in wanted]
        if stale:
            cloudwatch.delete_alarms(names=stale)
    except cloudwatch.AwsError as exc:
        raise MonitoringError(f"CloudWatch refused the alarms: {exc}") from exc
    row.alarm_names = [spec.name for spec in specs]
    row.alarms_synced_at = timezone.now()


def alarm_state_set(*, environment: Environment, name: str, state: str, reason: str) -> None:
    """Force one of the environment's alarms into ``state`` until CloudWatch next
    evaluates it: AWS's way to test what an alarm sets off (here: a bake-window
    rollback). Only the environment's own alarms."""
    row = MonitoringSettings.objects.filter(environment=environment).first()
    if row is None or name not in (row.alarm_names or []):
        raise MonitoringError(f"{name!r} is not one of this environment's alarms")
    try:
        cloudwatch.set_alarm_state(name=name, state=state, reason=reason)
    except cloudwatch.AwsError as exc:
        raise MonitoringError(f"CloudWatch refused: {exc}") from exc
    alarm_states_forget(environment=environment)
