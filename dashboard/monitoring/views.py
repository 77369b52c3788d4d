"""Pages: an environment's metrics and logs, its monitoring settings, and the
fragments other pages load (alarm states, a deployment's before/after and logs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import ADMIN, VIEWER, user_has_role
from dashboard.aws.errors import AwsError
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import deployment_get, environment_get
from dashboard.monitoring import catalog, logview, metrics
from dashboard.monitoring.forms import MonitoringSettingsForm, parse_instant
from dashboard.monitoring.selectors import (
    alarm_states,
    environment_service,
    monitoring_settings_get,
)
from dashboard.monitoring.services import (
    EDITABLE_FIELDS,
    MonitoringError,
    alarm_state_set,
    monitoring_settings_update,
)

LOG_RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def _environment_or_404(model: str, name: str) -> Environment:
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


def _problem(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "problem.html", {"title": title, "message": message}, status=status)


def _aws_status(exc: AwsError) -> int:
    return 503 if exc.transient else 502


# --- Metrics ---------------------------------------------------------------------


@role_required(VIEWER)
def metrics_page(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    try:
        service = environment_service(environment=env)
    except catalog.NotAServiceArn as exc:
        return _problem(request, "No service to monitor", str(exc), 409)
    except AwsError as exc:
        return _problem(request, "ECS is not answering", str(exc), _aws_status(exc))
    preset = request.GET.get("range", catalog.DEFAULT_RANGE)
    if preset not in catalog.RANGES and preset != "custom":
        preset = catalog.DEFAULT_RANGE
    return render(
        request,
        "monitoring/metrics.html",
        {
            "environment": env,
            "service": service,
            "ranges": catalog.RANGES.values(),
            "range": preset,
            "data_url": reverse("monitoring-metrics-data", args=[model, environment]),
        },
    )


def _window(request: HttpRequest) -> metrics.TimeWindow:
    raw_start, raw_end = request.GET.get("start"), request.GET.get("end")
    if raw_start or raw_end:
        if not (raw_start and raw_end):
            raise metrics.WindowError("give both start and end (or a range)")
        period_raw = request.GET.get("period")
        try:
            period = int(period_raw) if period_raw else None
        except ValueError as exc:
            raise metrics.WindowError("period must be a whole number of seconds") from exc
        try:
            start = parse_instant(raw_start, "start")
            end = parse_instant(raw_end, "end")
        except ValueError as exc:
            raise metrics.WindowError(str(exc)) from exc
        return metrics.window_custom(start=start, end=end, period=period)
    return metrics.window_for_preset(request.GET.get("range", catalog.DEFAULT_RANGE))


@role_required(VIEWER)
def metrics_data(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    """Every chart of the page in one JSON answer (one GetMetricData call, shared)."""
    env = _environment_or_404(model, environment)
    try:
        window = _window(request)
        data = metrics.metrics_page_data(environment=env, window=window)
    except (metrics.WindowError, catalog.NotAServiceArn) as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    except AwsError as exc:
        # GetMetricData, or looking up an ECS service's load balancer and logs.
        where = "CloudWatch" if exc.operation == "GetMetricData" else "AWS"
        return JsonResponse({"detail": f"{where}: {exc}"}, status=_aws_status(exc))
    response = JsonResponse(data)
    response["Cache-Control"] = "private, no-store"
    return response


# --- Logs ------------------------------------------------------------------------


def _log_query(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    preset = request.GET.get("range") or "1h"
    raw_start, raw_end = request.GET.get("start", ""), request.GET.get("end", "")
    if raw_start or raw_end:
        preset = "custom"
        start = parse_instant(raw_start, "start") if raw_start else now - dt.timedelta(hours=1)
        end = parse_instant(raw_end, "end") if raw_end else now
    else:
        if preset == "custom":  # chosen without picking the times: the default
            preset = "1h"
        if preset not in LOG_RANGES:
            raise ValueError(f"range must be one of {', '.join(LOG_RANGES)} (or start and end)")
        start = now - dt.timedelta(seconds=LOG_RANGES[preset])
        # A minute ahead: lines whose clock runs slightly ahead still show.
        end = now + dt.timedelta(minutes=1)
    return {
        "stream": request.GET.get("stream") or "application",
        "q": request.GET.get("q", "").strip(),
        "range": preset,
        "start": start,
        "end": end,
        "live": preset != "custom",
    }


@role_required(VIEWER)
def logs_page(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    try:
        query = _log_query(request)
        result = logview.logs_read(
            environment=env,
            stream=query["stream"],
            pattern=query["q"],
            start=query["start"],
            end=query["end"],
            next_token=request.GET.get("next") or None,
        )
        service = environment_service(environment=env)  # read (and cached) by logs_read
    except (ValueError, catalog.NotAServiceArn) as exc:
        return _problem(request, "Cannot show these logs", str(exc), 400)
    except AwsError as exc:
        return _problem(request, "CloudWatch Logs is not answering", str(exc), _aws_status(exc))
    if request.GET.get("next"):
        query["live"] = False  # an older page: new lines do not belong on top of it
    older = request.GET.copy()
    older["next"] = result.next_token or ""
    return render(
        request,
        "monitoring/logs.html",
        {
            "environment": env,
            "query": query,
            "older_query": older.urlencode(),
            "ranges": LOG_RANGES,
            "lines": result.lines,
            "next_token": result.next_token,
            "rows_url": reverse("monitoring-logs-rows", args=[model, environment]),
            "streams_url": reverse("monitoring-logs-streams", args=[model, environment]),
            "has_service_logs": service.logs is not None and service.logs.service_group is not None,
            "log_group": service.logs.application_group if service.logs else "",
            "log_prefix": service.logs.application_prefix if service.logs else "",
            "service_label": service.label,
            "tail_after": max((line.timestamp for line in result.lines), default=0)
            or int(query["start"].timestamp() * 1000),
        },
    )


@role_required(VIEWER)
def logs_streams(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    """The most recently written streams of both log groups (the stream picker
    loads them after the first screen of lines, which does not wait for them)."""
    env = _environment_or_404(model, environment)
    try:
        return JsonResponse(logview.stream_names(environment=env))
    except (ValueError, catalog.NotAServiceArn) as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    except AwsError as exc:
        return JsonResponse({"detail": f"CloudWatch Logs: {exc}"}, status=_aws_status(exc))


@role_required(VIEWER)
def logs_rows(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    """Rows for the logs table: older ones (``next``) or live-tail ones (``after``)."""
    env = _environment_or_404(model, environment)
    try:
        query = _log_query(request)
        after = request.GET.get("after")
        if after is not None:
            try:
                after_ms = int(after)
            except ValueError as exc:
                raise ValueError("after must be milliseconds since the epoch") from exc
            seen = set(filter(None, request.GET.get("seen", "").split(",")))
            lines, skipped = logview.logs_tail(
                environment=env,
                stream=query["stream"],
                pattern=query["q"],
                after_ms=after_ms,
                seen=seen,
            )
            next_token = None
        else:
            result = logview.logs_read(
                environment=env,
                stream=query["stream"],
                pattern=query["q"],
                start=query["start"],
                end=query["end"],
                next_token=request.GET.get("next") or None,
            )
            lines, skipped, next_token = result.lines, False, result.next_token
    except (ValueError, catalog.NotAServiceArn) as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    except AwsError as exc:
        return HttpResponse(
            f"CloudWatch Logs: {exc}", status=_aws_status(exc), content_type="text/plain"
        )
    response = render(
        request,
        "monitoring/_log_rows.html",
        {"lines": lines, "skipped": skipped, "tail": after is not None, "query": query},
    )
    response["X-Next-Token"] = next_token or ""
    response["X-Line-Count"] = str(len(lines))
    return response


# --- Settings and alarms -----------------------------------------------------------


@role_required(VIEWER)
def settings_page(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    row = monitoring_settings_get(environment=env)
    can_edit = user_has_role(request.user, ADMIN)
    if request.method == "POST":
        if not can_edit:
            return render(
                request,
                "403.html",
                {"message": "Changing monitoring settings needs the admin role."},
                status=403,
            )
        form = MonitoringSettingsForm(
            request.POST, instance=monitoring_settings_get(environment=env)
        )
        if form.is_valid():
            values = {name: form.cleaned_data[name] for name in EDITABLE_FIELDS}
            try:
                monitoring_settings_update(environment=env, user=request.user, values=values)
            except MonitoringError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Monitoring of {env.name} saved; alarms updated.")
                return redirect("monitoring-settings", model=model, environment=environment)
    else:
        form = MonitoringSettingsForm(instance=row)
    try:
        states = alarm_states(environment=env)
        states_error = ""
    except AwsError as exc:
        states, states_error = [], str(exc)
    alarm_source = _alarm_source(env)
    return render(
        request,
        "monitoring/settings.html",
        {
            "environment": env,
            "form": form,
            "row": row,
            "can_edit": can_edit,
            "states": states,
            "states_error": states_error,
            "alarm_source": alarm_source,
        },
        status=400 if request.method == "POST" else 200,
    )


def _alarm_source(environment: Environment) -> str:
    """What the alarms watch for this environment's kind of service, in words."""
    try:
        service = environment_service(environment=environment)
    except (catalog.NotAServiceArn, AwsError) as exc:
        return f"The environment's service could not be read, so no alarms can be written: {exc}"
    if service.platform == "apprunner":
        return (
            "They read App Runner's own metrics (AWS/AppRunner Requests, 5xxStatusResponses, "
            "RequestLatency)."
        )
    if service.source("Requests") is None:
        return (
            f"The {service.label} has no Application Load Balancer target group: it publishes "
            "no request metrics, so alarms cannot be turned on (CPU and memory are charted)."
        )
    return (
        f"The {service.label} is watched through its load balancer: AWS/ApplicationELB "
        "RequestCount, HTTPCode_Target_5XX_Count and TargetResponseTime (p99, in ms) of its "
        "target group(s). ECS's own deployment alarms (Express canaries) are separate."
    )


@require_POST
@role_required(ADMIN)
def alarm_state_test(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    state = request.POST.get("state", "ALARM")
    try:
        alarm_state_set(
            environment=env,
            name=request.POST.get("name", ""),
            state=state if state in ("ALARM", "OK") else "ALARM",
            reason=f"Set by {request.user.get_username()} from ModelDeck to test the alarm",
        )
    except MonitoringError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Alarm state set; CloudWatch resets it at its next evaluation.")
    return redirect("monitoring-settings", model=model, environment=environment)


@role_required(VIEWER)
def alarms_fragment(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    """The environment's alarm states (loaded into the model page's environment card)."""
    env = _environment_or_404(model, environment)
    context: dict[str, Any] = {"environment": env, "states": [], "error": ""}
    try:
        context["states"] = alarm_states(environment=env)
    except AwsError as exc:
        context["error"] = str(exc)
    return render(request, "monitoring/_alarm_states.html", context)


# --- A deployment's monitoring -------------------------------------------------------


@role_required(VIEWER)
def deployment_fragment(request: HttpRequest, deployment_id: int) -> HttpResponse:
    """Before/after numbers, the deployment's own log stream and the application
    logs of its time window (loaded into the deployment page)."""
    deployment = deployment_get(deployment_id=deployment_id)
    if deployment is None:
        raise Http404(f"no deployment #{deployment_id}")
    from dashboard.monitoring.context import deployment_monitoring_context

    return render(
        request,
        "monitoring/_deployment_monitoring.html",
        deployment_monitoring_context(deployment=deployment),
    )
