"""Template context for the monitoring parts other apps' pages show.

- ``monitoring/_alarms.html`` (an environment's alarm states): include it with
  ``environment`` in the context; it loads its content from this app, so the
  including view needs nothing else. ``alarms_context`` gives the same data to
  a view that prefers to render it inline (``monitoring/_alarm_states.html``).
- ``monitoring/_deployment.html`` (a deployment's before/after comparison,
  its ``deployment/<operation-id>`` log stream (App Runner only: ECS writes
  none) and the application logs of its time window): include it with
  ``deployment`` in the context; likewise
  ``deployment_monitoring_context`` for inline rendering
  (``monitoring/_deployment_monitoring.html``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from dashboard.aws.errors import AwsError
from dashboard.deployments.models import Deployment, Environment
from dashboard.monitoring import catalog, logview, metrics
from dashboard.monitoring.selectors import alarm_states, environment_service

DEPLOYMENT_LOG_LINES = 100


def alarms_context(*, environment: Environment) -> dict[str, Any]:
    """``states`` (AlarmState list) and ``error`` (why they could not be read)."""
    try:
        return {
            "environment": environment,
            "states": alarm_states(environment=environment),
            "error": "",
        }
    except AwsError as exc:
        return {"environment": environment, "states": [], "error": str(exc)}


def _logs_url(environment: Environment, **params: str) -> str:
    base = reverse("monitoring-logs", args=[environment.model_name, environment.name])
    return f"{base}?{urlencode(params)}"


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def deployment_monitoring_context(*, deployment: Deployment) -> dict[str, Any]:
    """Everything ``monitoring/_deployment_monitoring.html`` shows; AWS failures
    become messages in the context, never exceptions."""
    environment = deployment.environment
    context: dict[str, Any] = {"deployment": deployment, "environment": environment}
    try:
        service = environment_service(environment=environment)
    except catalog.NotAServiceArn as exc:
        context["problem"] = str(exc)
        return context
    except AwsError as exc:
        context["problem"] = f"The service could not be read: {exc}"
        return context
    context["service_label"] = service.label
    try:
        context["comparison"] = metrics.deployment_comparison(deployment=deployment)
    except (AwsError, ValueError) as exc:
        context["comparison_error"] = str(exc)
    began = deployment.started_at or deployment.created_at
    ended = deployment.finished_at or timezone.now()
    window_start = began - dt.timedelta(minutes=1)
    window_end = ended + dt.timedelta(minutes=2)
    if service.logs is None:
        context["application_logs_error"] = f"No CloudWatch Logs: {service.logs_problem}"
        context["window_start"], context["window_end"] = window_start, window_end
        return context
    if service.logs.service_group is None:
        # ECS writes no log stream per deployment (App Runner's deployment/<op>):
        # the rollout's own record is the service deployment the page shows.
        context["no_deployment_stream"] = (
            f"The {service.label} writes no log stream per deployment (App Runner's "
            "deployment/<operation-id>); what the tasks printed during it is below."
        )
    elif deployment.operation_id:
        stream = f"deployment/{deployment.operation_id}"
        context["deployment_stream"] = stream
        context["deployment_logs_url"] = _logs_url(
            environment,
            stream=stream,
            start=_iso(window_start - dt.timedelta(hours=1)),
            end=_iso(window_end + dt.timedelta(hours=1)),
        )
        try:
            context["deployment_lines"] = list(
                reversed(
                    logview.logs_read(
                        environment=environment,
                        stream=stream,
                        start=window_start - dt.timedelta(hours=1),
                        end=window_end + dt.timedelta(hours=1),
                        limit=DEPLOYMENT_LOG_LINES,
                    ).lines
                )
            )
        except AwsError as exc:
            context["deployment_logs_error"] = str(exc)
    context["application_logs_url"] = _logs_url(
        environment, stream="application", start=_iso(window_start), end=_iso(window_end)
    )
    try:
        context["application_lines"] = logview.logs_read(
            environment=environment,
            stream="application",
            start=window_start,
            end=window_end,
            limit=DEPLOYMENT_LOG_LINES,
        ).lines
    except AwsError as exc:
        context["application_logs_error"] = str(exc)
    context["window_start"] = window_start
    context["window_end"] = window_end
    return context
