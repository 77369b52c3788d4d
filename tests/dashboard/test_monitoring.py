"""Monitoring: metric queries and their answers (embedded CloudWatch for sums and
averages), deployment markers, the shared cache, logs paging and filtering,
alarms, the API and the pages."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.test import Client
from django.utils import timezone

from dashboard.aws import cloudwatch
from dashboard.aws.clients import client as aws_client
from dashboard.deployments.models import Deployment, Environment
from dashboard.monitoring import catalog, logview, metrics, selectors
from dashboard.monitoring.models import MonitoringSettings
from dashboard.monitoring.services import MonitoringError, monitoring_settings_update
from tests.conftest import publish
from tests.dashboard.factories import make_environment, token_headers

SERVICE_ID = "0123456789abcdef0123456789abcdef"
DIMS = [
    {"Name": "ServiceName", "Value": "iris-staging"},
    {"Name": "ServiceID", "Value": SERVICE_ID},
]
APP_GROUP = f"/aws/apprunner/iris-staging/{SERVICE_ID}/application"
SERVICE_GROUP = f"/aws/apprunner/iris-staging/{SERVICE_ID}/service"


def minute(value: dt.datetime) -> dt.datetime:
    return value.replace(second=0, microsecond=0)


@pytest.fixture
def base_time() -> dt.datetime:
    """A whole hour, two hours ago: CloudWatch-recent and stable within a test."""
    return (timezone.now() - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def env(aws: str, db: Any, tmp_path: Path, settings: Any) -> Environment:
    settings.MONITORING_ALARM_CACHE_SECONDS = 0
    settings.CLOUDWATCH_PERCENTILES_NAMESPACE = ""
    publish("iris", "1.0", tmp_path)
    environment = make_environment("iris", "staging")
    Environment.objects.filter(pk=environment.pk).update(promoted_version="1.0")
    environment.refresh_from_db()
    return environment


def boto(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def put(endpoint: str, namespace: str, data: list[dict[str, Any]]) -> None:
    boto("cloudwatch", endpoint).put_metric_data(Namespace=namespace, MetricData=data)


def datum(
    name: str, at: dt.datetime, value: float, dims: list[dict[str, str]] = DIMS
) -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": value}


def deploy(
    environment: Environment, version: str, at: dt.datetime, status: str = "succeeded"
) -> Deployment:
    """A deployment whose version went live at ``at`` (if it succeeded)."""
    live = {"live_at": at if status == "succeeded" else None} if selectors._HAS_LIVE_AT else {}
    return Deployment.objects.create(
        environment=environment,
        to_version=version,
        status=status,
        pointer={"version": version},
        operation_id="6f1c2a9e-1111-4c3b-9d1e-0123456789ab",
        started_at=at - dt.timedelta(minutes=1),
        finished_at=at,
        **live,
    )


def series(data: dict[str, Any], chart: str, label: str) -> list[Any]:
    found = next(c for c in data["charts"] if c["id"] == chart)
    return next(s["values"] for s in found["series"] if s["label"] == label)


# --- Names and windows ----------------------------------------------------------------


def test_service_identity_from_the_arn() -> None:
    identity = catalog.service_identity(
        f"arn:aws:apprunner:eu-west-1:123456789012:service/iris-prod/{SERVICE_ID}"
    )
    assert identity.dimensions == (("ServiceName", "iris-prod"), ("ServiceID", SERVICE_ID))
    assert identity.application_log_group == f"/aws/apprunner/iris-prod/{SERVICE_ID}/application"
    assert identity.region == "eu-west-1"
    for bad in ("", "arn:aws:s3:::bucket", "arn:aws:apprunner:us-east-1:1:service/x/y"):
        with pytest.raises(catalog.NotAServiceArn, match="not an App Runner service ARN"):
            catalog.service_identity(bad)


def test_preset_windows_are_shared_within_a_refresh_slot_and_aligned() -> None:
    now = dt.datetime(2026, 11, 24, 3, 7, 31, tzinfo=dt.UTC)
    a = metrics.window_for_preset("1h", now=now)
    b = metrics.window_for_preset("1h", now=now + dt.timedelta(seconds=13))
    c = metrics.window_for_preset("1h", now=now + dt.timedelta(seconds=15))
    assert a == b and c != a
    assert a.end == dt.datetime(2026, 11, 24, 3, 7, 45, tzinfo=dt.UTC)
    assert a.start.timestamp() % 60 == 0 and a.end - a.start >= dt.timedelta(hours=1)
    week = metrics.window_for_preset("7d", now=now)
    assert week.period == 3600 and len(week.timestamps) == 169
    with pytest.raises(metrics.WindowError, match="range must be one of"):
        metrics.window_for_preset("2h", now=now)


@pytest.mark.parametrize(
    ("start", "end", "period", "message"),
    [
        ("2026-11-24T03:00:00+00:00", "2026-11-24T02:00:00+00:00", None, "end must be after start"),
        ("2026-11-24T03:00:00+00:00", "2026-11-24T04:00:00+00:00", 30, "multiple of 60"),
        ("2026-11-20T00:00:00+00:00", "2026-11-24T00:00:00+00:00", 60, "too many"),
        ("2020-01-01T00:00:00+00:00", "2020-01-02T00:00:00+00:00", None, "455 days"),
    ],
)
def test_custom_windows_refuse_what_cloudwatch_cannot_answer(
    start: str, end: str, period: int | None, message: str
) -> None:
    with pytest.raises(metrics.WindowError, match=message):
        metrics.window_custom(
            start=dt.datetime.fromisoformat(start),
            end=dt.datetime.fromisoformat(end),
            period=period,
            now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC),
        )


# --- Metrics answers (embedded CloudWatch: sums and averages) -------------------------------


def test_page_data_sums_rates_averages_and_zero_filled_counts(
    env: Environment, aws: str, base_time: dt.datetime
) -> None:
    t = base_time
    put(
        aws,
        "AWS/AppRunner",
        [
            datum("Requests", t + dt.timedelta(seconds=5), 30),
            datum("Requests", t + dt.timedelta(seconds=35), 10),
            datum("5xxStatusResponses", t + dt.timedelta(seconds=35), 4),
            datum("4xxStatusResponses", t + dt.timedelta(seconds=5), 2),
            datum("Requests", t + dt.timedelta(minutes=2, seconds=1), 50),
            datum("CPUUtilization", t + dt.timedelta(seconds=1), 20),
            datum("CPUUtilization", t + dt.timedelta(seconds=31), 40),
            # Another service's numbers must not leak in.
            datum(
                "Requests",
                t,
                999,
                [
                    {"Name": "ServiceName", "Value": "other"},
                    {"Name": "ServiceID", "Value": SERVICE_ID},
                ],
            ),
        ],
    )
    window = metrics.window_custom(start=t, end=t + dt.timedelta(minutes=3), period=60)
    data = metrics.metrics_page_data(environment=env, window=window)
    assert data["timestamps"] == [int((t + dt.timedelta(minutes=m)).timestamp()) for m in range(3)]
    assert series(data, "requests", "Requests") == [40.0, 0.0, 50.0]
    assert series(data, "status", "5xx") == [4.0, 0.0, 0.0]
    assert series(data, "error_rate", "5xx") == [10.0, None, 0.0]  # 4/40; no requests: no rate
    assert series(data, "error_rate", "4xx") == [5.0, None, 0.0]
    assert series(data, "cpu", "CPU") == [30.0, None, None]  # averaged, gaps stay gaps
    assert data["cloudwatch_calls"] == 1
    assert data["cached"] is False
    # Every chart came from that one call: one query per distinct metric and statistic.
    # 11 service queries (4 counts, 3 latency percentiles, instances, concurrency,
    # CPU, memory; the rates reuse the counts) + 5 inference ones for version 1.0.
    assert data["queries"] == 16
    predictions = next(c for c in data["charts"] if c["id"] == "predictions")
    assert predictions["series"][0]["label"] == "1.0"
    again = metrics.metrics_page_data(environment=env, window=window)
    assert again["cached"] is True and series(again, "requests", "Requests") == [40.0, 0.0, 50.0]


def test_percentiles_come_from_the_precomputed_namespace_where_configured(
    env: Environment, aws: str, base_time: dt.datetime, settings: Any
) -> None:
    settings.CLOUDWATCH_PERCENTILES_NAMESPACE = "DevStack/Percentiles"
    t = base_time
    for stat, values in (("p50", (10, 20)), ("p99", (100, 300))):
        dims = [
            *DIMS,
            {"Name": "SourceNamespace", "Value": "AWS/AppRunner"},
            {"Name": "Statistic", "Value": stat},
        ]
        put(
            aws,
            "DevStack/Percentiles",
            [
                datum("RequestLatency", t + dt.timedelta(seconds=s), v, dims)
                for s, v in zip((5, 35), values, strict=True)
            ],
        )
    window = metrics.window_custom(start=t, end=t + dt.timedelta(minutes=1), period=60)
    data = metrics.metrics_page_data(environment=env, window=window)
    assert series(data, "latency", "p50") == [15.0]
    assert series(data, "latency", "p99") == [200.0]
    assert series(data, "latency", "p90") == [None]
    assert any("pre-computed" in note for note in data["notes"])


def test_inference_charts_split_by_the_versions_served_in_the_window(
    env: Environment, aws: str, base_time: dt.datetime
) -> None:
    t = base_time
    deploy(env, "1.0", t - dt.timedelta(days=1))
    deploy(env, "2.0", t + dt.timedelta(minutes=1, seconds=30))
    for version, value in (("1.0", 7), ("2.0", 9)):
        dims = [
            {"Name": "Environment", "Value": "staging"},
            {"Name": "Model", "Value": "iris"},
            {"Name": "Version", "Value": version},
        ]
        put(
            aws,
            "ModelDeck/Inference",
            [datum("Predictions", t + dt.timedelta(minutes=2), value, dims)],
        )
    window = metrics.window_custom(start=t, end=t + dt.timedelta(minutes=3), period=60)
    data = metrics.metrics_page_data(environment=env, window=window)
    assert data["versions"] == ["1.0", "2.0"]
    assert series(data, "predictions", "1.0") == [0.0, 0.0, 7.0]
    assert series(data, "predictions", "2.0") == [0.0, 0.0, 9.0]


def test_deployment_markers_at_the_time_each_version_went_live_and_linked(
    env: Environment, base_time: dt.datetime
) -> None:
    t = base_time
    live = deploy(env, "2.0", t + dt.timedelta(minutes=10, seconds=12))
    deploy(env, "2.1", t + dt.timedelta(minutes=20), status="failed")
    deploy(env, "1.9", t - dt.timedelta(hours=5))
    other = make_environment("iris", "production")
    deploy(other, "3.0", t + dt.timedelta(minutes=15))
    rollback = deploy(env, "1.9", t + dt.timedelta(minutes=30))
    Deployment.objects.filter(pk=rollback.pk).update(kind="rollback")
    markers = selectors.deployment_markers(environment=env, start=t, end=t + dt.timedelta(hours=1))
    assert [(m.version, m.at, m.kind) for m in markers] == [
        ("2.0", t + dt.timedelta(minutes=10, seconds=12), "promote"),
        ("1.9", t + dt.timedelta(minutes=30), "rollback"),
    ]
    assert markers[0].url == f"/deployments/{live.pk}/"
    assert markers[0].as_json()["at"] == (t + dt.timedelta(minutes=10, seconds=12)).timestamp()
    assert selectors.version_live_at(environment=env, at=t) == "1.9"
    assert selectors.versions_in_window(
        environment=env, start=t, end=t + dt.timedelta(hours=1)
    ) == ["2.0", "1.9"]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_twenty_pages_refreshing_cost_one_get_metric_data(
    aws: str, tmp_path: Path, settings: Any
) -> None:
    import os

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        }
    }
    from django.core.cache import cache

    cache.clear()
    publish("iris", "1.0", tmp_path)
    environment = make_environment("iris", "staging")
    calls: list[str] = []
    cw = aws_client("cloudwatch")

    def count(**kwargs: Any) -> None:
        calls.append("GetMetricData")
        time.sleep(0.2)  # a slow CloudWatch: the others arrive while it answers

    cw.meta.events.register("before-call.cloudwatch.GetMetricData", count)
    try:
        window = metrics.window_for_preset("1h")
        answers: list[dict[str, Any]] = []

        def page() -> None:
            from django.db import connection

            try:
                answers.append(metrics.metrics_page_data(environment=environment, window=window))
            finally:
                connection.close()

        threads = [threading.Thread(target=page) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 20
        assert calls == ["GetMetricData"]
        assert sum(not a["cached"] for a in answers) == 1
        # The next refresh slot asks CloudWatch again, once.
        later = metrics.window_for_preset("1h", now=timezone.now() + dt.timedelta(seconds=15))
        metrics.metrics_page_data(environment=environment, window=later)
        metrics.metrics_page_data(environment=environment, window=later)
        assert len(calls) == 2
    finally:
        cw.meta.events.unregister("before-call.cloudwatch.GetMetricData", count)
        cache.clear()


def test_before_after_comparison(env: Environment, aws: str, base_time: dt.datetime) -> None:
    pivot = base_time
    deployment = deploy(env, "2.0", pivot + dt.timedelta(seconds=20))
    put(
        aws,
        "AWS/AppRunner",
        [
            datum("Requests", pivot - dt.timedelta(minutes=30), 100),
            datum("5xxStatusResponses", pivot - dt.timedelta(minutes=30), 1),
            datum("Requests", pivot + dt.timedelta(minutes=10), 40),
            datum("Requests", pivot + dt.timedelta(minutes=40), 60),
            datum("5xxStatusResponses", pivot + dt.timedelta(minutes=40), 10),
        ],
    )
    result = metrics.deployment_comparison(deployment=deployment, now=pivot + dt.timedelta(hours=3))
    rows = {r["name"]: r for r in result["rows"]}
    assert result["live_at"] == pivot and result["minutes_after"] == 60
    # per minute, so the hour before and the minutes after so far compare (found by QA)
    assert (rows["requests"]["before"], rows["requests"]["after"]) == (1.67, 1.67)
    assert (rows["error_rate"]["before"], rows["error_rate"]["after"]) == (1.0, 10.0)
    assert rows["error_rate"]["worse"] and rows["error_rate"]["change"] == 900.0
    assert rows["p99"]["before"] is None  # moto computes no percentiles
    partial = metrics.deployment_comparison(
        deployment=deployment, now=pivot + dt.timedelta(minutes=20, seconds=40)
    )
    assert partial["minutes_after"] == 20
    assert {r["name"]: r["after"] for r in partial["rows"]}["requests"] == 2.0  # 40 in 20 min
    pending = deploy(env, "3.0", pivot, status="in_progress")
    assert metrics.deployment_comparison(deployment=pending)["live_at"] is None


# --- Logs ---------------------------------------------------------------------------------


@pytest.fixture
def app_logs(env: Environment, aws: str) -> int:
    """Application logs of two instances and a service group; returns the base ms."""
    logs = boto("logs", aws)
    base = (int(time.time()) - 600) * 1000
    for group in (APP_GROUP, SERVICE_GROUP):
        logs.create_log_group(logGroupName=group)
    streams = {
        (APP_GROUP, "instance/aa"): [
            (
                base + i * 1000,
                json.dumps(
                    {
                        "level": "info",
                        "method": "POST",
                        "path": "/predict",
                        "status": 500 if i == 7 else 200,
                        "latency_ms": 1.5,
                        "version": "1.0",
                        "request_id": f"r{i}",
                    }
                ),
            )
            for i in range(10)
        ],
        (APP_GROUP, "instance/bb"): [
            (base + 500, "Traceback (most recent call last):"),
            (base + 10_500, "plain hello"),
        ],
        (SERVICE_GROUP, "events"): [(base, "Deployment with ID : op-1 started")],
        (SERVICE_GROUP, "deployment/op-1"): [
            (base, "pulling image"),
            (base + 1, "health check passed"),
        ],
    }
    for (group, stream), events in streams.items():
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": ts, "message": message} for ts, message in events],
        )
    return base


def test_logs_newest_first_paging_and_filter(env: Environment, app_logs: int) -> None:
    start = timezone.now() - dt.timedelta(hours=1)
    end = timezone.now() + dt.timedelta(minutes=1)
    first = logview.logs_read(environment=env, start=start, end=end, limit=5)
    assert [line.message for line in first.lines][0] == "plain hello"
    stamps = [line.timestamp for line in first.lines]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == 5
    seen = list(first.lines)
    token = first.next_token
    while token:
        page = logview.logs_read(environment=env, start=start, end=end, limit=5, next_token=token)
        seen += page.lines
        token = page.next_token
    assert len(seen) == 12 and len({line.event_id for line in seen}) == 12
    assert (
        seen[-1].message == "Traceback (most recent call last):" or seen[-1].timestamp == app_logs
    )
    filtered = logview.logs_read(environment=env, start=start, end=end, pattern="Traceback")
    assert [line.message for line in filtered.lines] == ["Traceback (most recent call last):"]
    assert filtered.lines[0].level == "error"
    deployment = logview.logs_read(environment=env, stream="deployment/op-1", start=start, end=end)
    assert [line.message for line in deployment.lines] == ["health check passed", "pulling image"]
    service = logview.logs_read(environment=env, stream="service", start=start, end=end)
    assert {line.stream for line in service.lines} == {"events", "deployment/op-1"}
    one = logview.logs_read(environment=env, stream="instance/bb", start=start, end=end)
    assert len(one.lines) == 2
    with pytest.raises(logview.LogQueryError):
        logview.logs_read(environment=env, stream="bad:*", start=start, end=end)


def test_request_lines_become_columns_and_errors_stand_out(env: Environment, app_logs: int) -> None:
    lines = logview.logs_read(
        environment=env,
        stream="instance/aa",
        start=timezone.now() - dt.timedelta(hours=1),
        end=timezone.now(),
    ).lines
    failed = next(line for line in lines if line.request and line.request["status"] == 500)
    assert failed.kind == "request" and failed.level == "error"
    assert failed.request == {
        "method": "POST",
        "path": "/predict",
        "status": 500,
        "latency_ms": 1.5,
        "version": "1.0",
        "request_id": "r7",
        "status_class": "5xx",
    }
    assert sum(line.level == "error" for line in lines) == 1


def test_parse_line_kinds() -> None:
    from dashboard.aws.logs import LogEvent

    def parse(message: str) -> logview.LogLine:
        return logview.parse_line(LogEvent(event_id="1", timestamp=0, stream="s", message=message))

    metrics_line = parse('{"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}, "Predictions": 3}')
    assert metrics_line.kind == "metrics" and metrics_line.text == "metrics: Predictions=3"
    startup = parse(
        '{"level": "INFO", "event": "startup_phase", "phase": "load", "duration_s": 0.4}'
    )
    assert (
        startup.kind == "json" and "phase=load" in startup.text and "duration_s=0.4" in startup.text
    )
    failed = parse('{"level": "error", "message": "startup failed", "cause": "checksum_mismatch"}')
    assert failed.level == "error" and failed.text.startswith("startup failed")
    assert parse("WARNING disk almost full").level == "warning"
    assert parse("{not json").kind == "text"


def test_tail_returns_only_new_lines(env: Environment, app_logs: int) -> None:
    lines, skipped = logview.logs_tail(environment=env, after_ms=app_logs + 9000, seen=set())
    assert [line.message for line in lines][0] == "plain hello"
    assert not skipped
    newest = lines[0]
    again, _ = logview.logs_tail(environment=env, after_ms=newest.timestamp, seen={newest.event_id})
    assert again == []


# --- Alarms and the bake window -------------------------------------------------------------


def test_settings_create_alarms_and_selectors_see_their_state(env: Environment, aws: str) -> None:
    assert selectors.bake_minutes(environment=env) == 0
    assert selectors.alarms_firing(environment=env) == []
    row = monitoring_settings_update(
        environment=env,
        user=None,
        values={
            "alarms_enabled": True,
            "bake_minutes": 15,
            "error_rate_percent": 2.5,
            "latency_p99_ms": 800,
        },
    )
    assert row.alarm_names == [
        "modeldeck-iris-staging-5xx-rate",
        "modeldeck-iris-staging-p99-latency",
    ]
    described = boto("cloudwatch", aws).describe_alarms(AlarmNames=row.alarm_names)["MetricAlarms"]
    by_name = {a["AlarmName"]: a for a in described}
    latency = by_name["modeldeck-iris-staging-p99-latency"]
    assert (latency["ExtendedStatistic"], latency["Threshold"], latency["MetricName"]) == (
        "p99",
        800.0,
        "RequestLatency",
    )
    assert {d["Name"]: d["Value"] for d in latency["Dimensions"]} == {
        "ServiceName": "iris-staging",
        "ServiceID": SERVICE_ID,
    }
    rate = by_name["modeldeck-iris-staging-5xx-rate"]
    assert rate["Threshold"] == 2.5
    assert [m["Id"] for m in rate["Metrics"]] == ["requests", "errors", "rate"]
    assert selectors.bake_minutes(environment=env) == 15
    assert selectors.alarms_firing(environment=env) == []
    states = selectors.alarm_states(environment=env)
    # AWS starts an alarm in INSUFFICIENT_DATA, moto in OK: neither is firing.
    assert len(states) == 2 and {s.state for s in states} <= {"OK", "INSUFFICIENT_DATA"}

    cloudwatch.set_alarm_state(
        name="modeldeck-iris-staging-5xx-rate", state="ALARM", reason="Threshold Crossed: 3 > 2.5"
    )
    [firing] = selectors.alarms_firing(environment=env)
    assert (firing.name, firing.kind, firing.reason) == (
        "modeldeck-iris-staging-5xx-rate",
        "5xx-rate",
        "Threshold Crossed: 3 > 2.5",
    )
    # Turning one alarm off deletes it in CloudWatch.
    monitoring_settings_update(environment=env, user=None, values={"latency_enabled": False})
    left = boto("cloudwatch", aws).describe_alarms(AlarmNamePrefix="modeldeck-iris-")[
        "MetricAlarms"
    ]
    assert [a["AlarmName"] for a in left] == ["modeldeck-iris-staging-5xx-rate"]
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": False})
    assert (
        boto("cloudwatch", aws).describe_alarms(AlarmNamePrefix="modeldeck-iris-")["MetricAlarms"]
        == []
    )
    assert selectors.bake_minutes(environment=env) == 0
    assert selectors.alarms_firing(environment=env) == []


def test_alarm_states_are_reused_briefly(env: Environment, aws: str, settings: Any) -> None:
    settings.MONITORING_ALARM_CACHE_SECONDS = 60
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    assert selectors.alarms_firing(environment=env) == []
    cloudwatch.set_alarm_state(name="modeldeck-iris-staging-5xx-rate", state="ALARM", reason="r")
    assert selectors.alarms_firing(environment=env) == []  # the cached answer
    selectors.alarm_states_forget(environment=env)
    assert [s.name for s in selectors.alarms_firing(environment=env)] == [
        "modeldeck-iris-staging-5xx-rate"
    ]


def test_a_missing_alarm_reads_as_missing(env: Environment, aws: str) -> None:
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    boto("cloudwatch", aws).delete_alarms(AlarmNames=["modeldeck-iris-staging-p99-latency"])
    states = {s.kind: s.state for s in selectors.alarm_states(environment=env)}
    assert states["p99-latency"] == "MISSING" and states["5xx-rate"] in {"OK", "INSUFFICIENT_DATA"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"datapoints_to_alarm": 5, "evaluation_minutes": 3}, "at most evaluation_minutes"),
        ({"error_rate_percent": 0.0}, "error_rate_percent"),
        ({"inference_dimensions": {"Version": "x"}}, "not Model or Version"),
        ({"inference_dimensions": ["x"]}, "map dimension names"),
        ({"nonsense": 1}, "unknown settings"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    env: Environment, aws: str, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(MonitoringError, match=message):
        monitoring_settings_update(
            environment=env, user=None, values={"alarms_enabled": True, **values}
        )
    assert not MonitoringSettings.objects.filter(environment=env, alarms_enabled=True).exists()
    assert boto("cloudwatch", aws).describe_alarms()["MetricAlarms"] == []


def test_alarm_definitions_match_cloudwatchs_model(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stubber checks the PutMetricAlarm requests against botocore's model,
    which moto does not enforce (metric math shape, ExtendedStatistic)."""
    from botocore.stub import Stubber

    from dashboard.aws.clients import reset_clients

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_clients()
    stubber = Stubber(aws_client("cloudwatch"))
    stubber.activate()
    dims = [
        {"Name": "ServiceName", "Value": "iris-staging"},
        {"Name": "ServiceID", "Value": SERVICE_ID},
    ]

    def stat(qid: str, name: str) -> dict[str, Any]:
        return {
            "Id": qid,
            "ReturnData": False,
            "MetricStat": {
                "Metric": {"Namespace": "AWS/AppRunner", "MetricName": name, "Dimensions": dims},
                "Period": 60,
                "Stat": "Sum",
            },
        }

    common = {
        "ActionsEnabled": False,
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "TreatMissingData": "notBreaching",
        "Tags": [
            {"Key": "modeldeck:model", "Value": "iris"},
            {"Key": "modeldeck:environment", "Value": "staging"},
        ],
    }
    from botocore.stub import ANY

    stubber.add_response(
        "put_metric_alarm",
        {},
        {
            **common,
            "AlarmName": "modeldeck-iris-staging-5xx-rate",
            "AlarmDescription": ANY,
            "Threshold": 5.0,
            "Metrics": [
                stat("requests", "Requests"),
                stat("errors", "5xxStatusResponses"),
                {
                    "Id": "rate",
                    "ReturnData": True,
                    "Expression": "IF(requests >= 10, 100 * errors / requests, 0)",
                    "Label": "5xx rate (%)",
                },
            ],
        },
    )
    stubber.add_response(
        "put_metric_alarm",
        {},
        {
            **common,
            "AlarmName": "modeldeck-iris-staging-p99-latency",
            "AlarmDescription": ANY,
            "Threshold": 2000.0,
            "Namespace": "AWS/AppRunner",
            "MetricName": "RequestLatency",
            "Dimensions": dims,
            "Period": 60,
            "ExtendedStatistic": "p99",
            "EvaluateLowSampleCountPercentile": "ignore",
        },
    )
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    stubber.assert_no_pending_responses()
    reset_clients()


# --- API ------------------------------------------------------------------------------------


def test_metrics_api_shape_and_deployments(
    client: Client, env: Environment, aws: str, personas: Any, base_time: dt.datetime
) -> None:
    t = base_time
    put(aws, "AWS/AppRunner", [datum("Requests", t + dt.timedelta(minutes=1), 12)])
    live = deploy(env, "2.0", t + dt.timedelta(minutes=2))
    start = t.isoformat().replace("+00:00", "Z")
    end = (t + dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    response = client.get(
        f"/api/models/iris/environments/staging/metrics?metric=Requests&start={start}&end={end}&period=60",
        headers=token_headers(personas["viewer"]),
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["metric"], body["stat"], body["unit"], body["period"]) == (
        "Requests",
        "Sum",
        "count",
        60,
    )
    assert body["points"][1] == [
        (t + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        12.0,
    ]
    assert len(body["points"]) == 5  # counts: periods without data are 0
    assert body["deployments"] == [
        {
            "at": (t + dt.timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
            "version": "2.0",
            "deployment_id": live.pk,
        }
    ]
    rate = client.get(
        f"/api/models/iris/environments/staging/metrics?metric=ErrorRate&start={start}&end={end}",
        headers=token_headers(personas["viewer"]),
    )
    assert rate.status_code == 200 and rate.json()["points"] == [[body["points"][1][0], 0.0]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metric=Nope", "unknown metric"),
        ("metric=Requests&stat=p1000", "stat"),
        ("metric=Requests&start=yesterday", "ISO 8601"),
        (
            "metric=Requests&period=90&start=2026-11-24T00:00:00Z&end=2026-11-24T01:00:00Z",
            "multiple of 60",
        ),
        ("metric=Requests&version=1.0", "no version"),
        ("metric=ErrorRate&stat=Average", "ratio of sums"),
    ],
)
def test_metrics_api_bad_parameters_are_400(
    client: Client, env: Environment, personas: Any, query: str, message: str
) -> None:
    response = client.get(
        f"/api/models/iris/environments/staging/metrics?{query}",
        headers=token_headers(personas["viewer"]),
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_metrics_and_logs_api_need_a_role(client: Client, env: Environment, personas: Any) -> None:
    for path in ("metrics?metric=Requests", "logs"):
        url = f"/api/models/iris/environments/staging/{path}"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=token_headers(personas["outsider"])).status_code == 403
    assert (
        client.get(
            "/api/models/iris/environments/nope/logs", headers=token_headers(personas["viewer"])
        ).status_code
        == 404
    )


def test_logs_api_pages_newest_first(
    client: Client, env: Environment, app_logs: int, personas: Any
) -> None:
    headers = token_headers(personas["viewer"])
    url = "/api/models/iris/environments/staging/logs"
    first = client.get(f"{url}?limit=4", headers=headers).json()
    assert [e["message"] for e in first["events"]][0] == "plain hello"
    assert set(first["events"][0]) == {"at", "stream", "message"}
    second = client.get(f"{url}?limit=4&next={first['next']}", headers=headers).json()
    assert first["events"][-1]["at"] >= second["events"][0]["at"]
    assert not {e["message"] for e in first["events"]} & {e["message"] for e in second["events"]}
    filtered = client.get(f"{url}?q=Traceback", headers=headers).json()
    assert [e["stream"] for e in filtered["events"]] == ["instance/bb"] and filtered["next"] is None
    service = client.get(f"{url}?stream=deployment/op-1", headers=headers).json()
    assert len(service["events"]) == 2
    assert client.get(f"{url}?stream=a:b", headers=headers).status_code == 400
    assert client.get(f"{url}?start=nope", headers=headers).status_code == 400


def test_api_schema_documents_both_paths(client: Client, personas: Any) -> None:
    client.force_login(personas["viewer"])  # the API's docs need a session or a token
    schema = client.get("/api/schema").json()
    paths = schema["paths"]
    assert "/api/models/{model}/environments/{environment}/metrics" in paths
    assert "/api/models/{model}/environments/{environment}/logs" in paths


# --- Pages ------------------------------------------------------------------------------------


@pytest.fixture
def signed_in(client: Client, personas: Any) -> Iterator[Any]:
    def sign_in(persona: str) -> Client:
        client.force_login(personas[persona])
        return client

    yield sign_in


def test_metrics_page_and_data_by_persona(env: Environment, signed_in: Any, personas: Any) -> None:
    client = signed_in("outsider")
    assert client.get("/models/iris/environments/staging/metrics/").status_code == 403
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/metrics/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-url="/models/iris/environments/staging/metrics/data"' in html
    assert "vendor/uplot/uPlot.iife.min.js" in html and "<script>" not in html
    # uPlot comes from npm (package-lock.json), served by the dashboard itself.
    asset = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    body = b"".join(asset.streaming_content) if asset.streaming else asset.content
    assert asset.status_code == 200 and b"uPlot" in body[:5000]
    data = client.get("/models/iris/environments/staging/metrics/data?range=6h")
    assert data.status_code == 200 and data.json()["period"] == 300
    bad = client.get("/models/iris/environments/staging/metrics/data?range=2h")
    assert bad.status_code == 400 and "range must be one of" in bad.json()["detail"]
    assert client.get("/models/iris/environments/nope/metrics/").status_code == 404


def test_logs_page_lists_lines_with_request_columns(
    env: Environment, app_logs: int, signed_in: Any
) -> None:
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/logs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="log-line') == 12
    assert 'class="log-line level-error kind-request"' in html
    assert '<span class="path">/predict</span>' in html
    assert html.index("plain hello") < html.index("Traceback")
    rows = client.get("/models/iris/environments/staging/logs/rows?q=hello")
    assert rows.status_code == 200 and rows.content.decode().count("log-line") == 1
    tail = client.get(f"/models/iris/environments/staging/logs/rows?after={app_logs + 20_000}")
    assert tail.status_code == 200 and "log-line" not in tail.content.decode()
    assert client.get("/models/iris/environments/staging/logs/rows?after=x").status_code == 400
    streams = client.get("/models/iris/environments/staging/logs/streams").json()
    assert sorted(streams["application"]) == ["instance/aa", "instance/bb"]
    assert sorted(streams["service"]) == ["deployment/op-1", "events"]


def test_settings_page_admin_saves_alarms_others_cannot(
    env: Environment, aws: str, signed_in: Any
) -> None:
    url = "/models/iris/environments/staging/monitoring/"
    form = {
        "alarms_enabled": "on",
        "bake_minutes": "5",
        "error_rate_enabled": "on",
        "error_rate_percent": "3",
        "error_rate_min_requests": "10",
        "latency_enabled": "on",
        "latency_p99_ms": "1500",
        "evaluation_minutes": "3",
        "datapoints_to_alarm": "2",
        "inference_dimensions": "{}",
    }
    client = signed_in("deployer")
    page = client.get(url)
    assert page.status_code == 200 and "never 4xx" in page.content.decode()
    assert client.post(url, form).status_code == 403
    assert boto("cloudwatch", aws).describe_alarms()["MetricAlarms"] == []
    client = signed_in("admin")
    response = client.post(url, form)
    assert response.status_code == 302
    assert selectors.bake_minutes(environment=env) == 5
    assert len(boto("cloudwatch", aws).describe_alarms()["MetricAlarms"]) == 2
    bad = client.post(url, {**form, "datapoints_to_alarm": "9"})
    assert bad.status_code == 400 and "at most evaluation_minutes" in bad.content.decode()
    assert selectors.bake_minutes(environment=env) == 5
    fragment = client.get("/models/iris/environments/staging/alarms")
    html = fragment.content.decode()
    assert fragment.status_code == 200 and html.count("data-state=") == 2
    assert 'data-state="ALARM"' not in html
    test = client.post(
        "/models/iris/environments/staging/monitoring/alarm-state",
        {"name": "modeldeck-iris-staging-p99-latency", "state": "ALARM"},
    )
    assert test.status_code == 302
    assert [s.kind for s in selectors.alarms_firing(environment=env)] == ["p99-latency"]


def test_deployment_fragment_shows_comparison_and_its_logs(
    env: Environment, app_logs: int, signed_in: Any
) -> None:
    live = dt.datetime.fromtimestamp(app_logs / 1000, tz=dt.UTC) + dt.timedelta(seconds=5)
    deployment = deploy(env, "2.0", live)
    client = signed_in("viewer")
    fragment = client.get(f"/deployments/{deployment.pk}/monitoring")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'id="deployment-comparison"' in html
    assert "deployment/6f1c2a9e-1111-4c3b-9d1e-0123456789ab" in html
    assert 'id="deployment-application-logs"' in html and "plain hello" in html
    page = client.get(f"/deployments/{deployment.pk}/")
    assert f'hx-get="/deployments/{deployment.pk}/monitoring"' in page.content.decode()
    assert client.get("/deployments/999999/monitoring").status_code == 404


def test_metrics_answer_without_a_cache(env: Environment, aws: str, settings: Any) -> None:
    """Redis down: every request asks CloudWatch itself, none fails."""
    from tests.conftest import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    try:
        window = metrics.window_for_preset("1h")
        first = metrics.metrics_page_data(environment=env, window=window)
        second = metrics.metrics_page_data(environment=env, window=window)
        assert first["cached"] is False and second["cached"] is False
        assert first["cloudwatch_calls"] == 1
    finally:
        # The suite's cache again before its own teardown clears it.
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
