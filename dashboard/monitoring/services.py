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


def _stats(
    prefix: str, source: catalog.MetricSource, stat: str
) -> tuple[list[MetricQuery], list[str]]:
    """One hidden query per dimension set of ``source``, and their ids."""
    queries = [
        MetricQuery(
            id=f"{prefix}{i}" if len(source.dimension_sets) > 1 else prefix,
            stat=cloudwatch.MetricStat(
                namespace=source.namespace,
                metric_name=source.metric_name,
                dimensions=dims,
                stat=stat,
                period=ALARM_PERIOD_SECONDS,
            ),
            return_data=False,
        )
        for i, dims in enumerate(source.dimension_sets)
    ]
    return queries, [q.id for q in queries]


def _total(ids: list[str]) -> str:
    """Metric math for the sum of counts (a target group without traffic
    publishes no data point: FILL makes it 0)."""
    if len(ids) == 1:
        return ids[0]
    return "(" + " + ".join(f"FILL({i}, 0)" for i in ids) + ")"


def alarm_specs(row: MonitoringSettings) -> list[AlarmSpec]:
    """The alarms the settings ask for (none when alarms are off).

    5xx RATE, not count: metric math over the service's Requests and
    5xxStatusResponses sums, so a busy service and a quiet one share a
    threshold; minutes with fewer than ``error_rate_min_requests`` requests
    count as 0. p99 latency: CloudWatch's own percentile of RequestLatency.
    Never 4xx: clients sending bad payloads must not roll back a good model.

    Wherever the service publishes them: App Runner's own metrics, or an ECS
    service's load balancer (RequestCount, HTTPCode_Target_5XX_Count and
    TargetResponseTime of its target groups, the latter in seconds: the
    alarm's math turns it into ms). Raises MonitoringError when the service
    publishes no request metrics (an ECS service without a load balancer).
    """
    if not row.alarms_enabled:
        return []
    environment = row.environment
    service = environment_service(environment=environment)
    requests_source = service.source("Requests")
    errors_source = service.source("5xxStatusResponses")
    latency_source = service.source("RequestLatency")
    if requests_source is None or errors_source is None or latency_source is None:
        raise MonitoringError(
            f"the {service.label} publishes no request metrics (an ECS service needs an "
            "Application Load Balancer for them), so there is nothing to alarm on"
        )
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
        requests, request_ids = _stats("requests", requests_source, "Sum")
        errors, error_ids = _stats("errors", errors_source, "Sum")
        total, failed = _total(request_ids), _total(error_ids)
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
                    *requests,
                    *errors,
                    MetricQuery(
                        id="rate",
                        expression=f"IF({total} >= {minimum}, 100 * {failed} / {total}, 0)",
                        label="5xx rate (%)",
                    ),
                ),
                **common,
            )
        )
    if row.latency_enabled:
        description = (
            f"ModelDeck: p99 request latency of {where} above {row.latency_p99_ms} ms. "
            "During a deployment's bake window this rolls it back."
        )
        name = alarm_name(environment=environment, kind=LATENCY_ALARM)
        if len(latency_source.dimension_sets) == 1 and latency_source.scale == 1.0:
            specs.append(
                AlarmSpec(
                    name=name,
                    description=description,
                    threshold=float(row.latency_p99_ms),
                    metric=cloudwatch.MetricStat(
                        namespace=latency_source.namespace,
                        metric_name=latency_source.metric_name,
                        dimensions=latency_source.dimension_sets[0],
                        stat="p99",
                        period=ALARM_PERIOD_SECONDS,
                    ),
                    **common,
                )
            )
        else:
            latencies, latency_ids = _stats("latency", latency_source, "p99")
            worst = latency_ids[0] if len(latency_ids) == 1 else f"MAX([{', '.join(latency_ids)}])"
            scale = f"{latency_source.scale:g} * " if latency_source.scale != 1.0 else ""
            specs.append(
                AlarmSpec(
                    name=name,
                    description=description,
                    threshold=float(row.latency_p99_ms),
                    metrics=(
                        *latencies,
                        MetricQuery(id="p99", expression=f"{scale}{worst}", label="p99 (ms)"),
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
            raise MonitoringError(f"alarms need the environment's service: {exc}") from exc
        except cloudwatch.AwsError as exc:
            raise MonitoringError(f"the environment's service could not be read: {exc}") from exc


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
    try:
        specs = alarm_specs(row)
    except (catalog.NotAServiceArn, cloudwatch.AwsError) as exc:
        raise MonitoringError(f"the environment's service could not be read: {exc}") from exc
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
