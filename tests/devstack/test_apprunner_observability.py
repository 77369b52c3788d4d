"""The App Runner stand-in's logs and metrics in the embedded CloudWatch
(devstack/apprunner/observability.py): App Runner's log groups and streams,
AWS/AppRunner request metrics measured at the stable URL, EMF lines turned
into metrics, and pre-computed percentiles where moto computes none."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from devstack.apprunner.config import parse_config
from devstack.apprunner.observability import (
    CloudWatchShipper,
    Distribution,
    log_groups,
    parse_emf,
)
from devstack.apprunner.server import run_in_background
from devstack.apprunner.service import service_id_for

INSTANCE = Path(__file__).with_name("observed_instance.py")


# --- EMF ---------------------------------------------------------------------------------


def emf(metrics: list[dict[str, Any]], dims: Any = (("Service",),), **members: Any) -> str:
    import json

    return json.dumps(
        {
            "_aws": {
                "Timestamp": 1_764_000_000_000,
                "CloudWatchMetrics": [
                    {"Namespace": "NS", "Dimensions": [list(d) for d in dims], "Metrics": metrics}
                ],
            },
            **members,
        }
    )


def test_emf_numbers_arrays_statistic_sets_and_dimension_sets() -> None:
    found = parse_emf(
        emf(
            [
                {"Name": "Latency", "Unit": "Milliseconds"},
                {"Name": "Batch"},
                {"Name": "Load", "Unit": "Seconds"},
            ],
            dims=(("Service", "Version"), ()),
            Service="svc",
            Version="1.0",
            Latency=[1, 2.5, 3],
            Batch=4,
            Load={"Min": 1, "Max": 3, "Count": 2, "Sum": 4},
            request_id="not a metric",
        )
    )
    assert found is not None
    keys = {
        (key, value if not isinstance(value, list) else tuple(value))
        for key, _, value in found
        if key[1] != "Load"
    }
    assert keys == {
        (("NS", "Latency", (("Service", "svc"), ("Version", "1.0")), "Milliseconds"), (1, 2.5, 3)),
        (("NS", "Latency", (), "Milliseconds"), (1, 2.5, 3)),
        (("NS", "Batch", (("Service", "svc"), ("Version", "1.0")), None), 4),
        (("NS", "Batch", (), None), 4),
    }
    assert all(stamp == 1_764_000_000.0 for _, stamp, _ in found)


@pytest.mark.parametrize(
    "line",
    [
        "plain text",
        '{"level": "info"}',
        '{"_aws": {"CloudWatchMetrics": []}}',  # no Timestamp
        emf([{"Name": "X"}], X=1),  # the Service dimension has no value
        emf([{"Name": "X"}], Service=5, X=1),  # a dimension value must be a string
        emf([{"Name": "X"}], Service="s", X="1"),  # a value must be a number
        emf([{"Name": "X"}], Service="s", X=[1] * 101),  # at most 100 values
        emf([{"Name": "X"}], Service="s", X=True),
        emf([{"Name": "X"}], Service="s", X={"Min": 1, "Max": 2}),  # incomplete set
        emf([{"Name": "X"}], Service="s", X=float("nan")),
        emf([{"Name": "X"}], Service="s", X={"Values": [1, 2], "Counts": [1]}),  # lengths differ
        emf([{"Name": "X"}], Service="s", X={"Values": [], "Counts": []}),
    ],
)
def test_emf_refuses_what_cloudwatch_refuses(line: str) -> None:
    assert parse_emf(line) is None


def test_emf_histograms_as_the_inference_service_writes_them() -> None:
    histogram = {
        "Values": [1.0, 2.0],
        "Counts": [3, 1],
        "Min": 0.8,
        "Max": 2.1,
        "Count": 4,
        "Sum": 5.2,
    }
    found = parse_emf(emf([{"Name": "L", "Unit": "Milliseconds"}], Service="s", L=histogram))
    assert found is not None and found[0][2] == histogram
    from devstack.apprunner.observability import _add_value

    d = Distribution()
    _add_value(d, histogram)
    _add_value(d, {"Values": [4.0], "Counts": [2]})  # no statistic set: from the bins
    assert d.statistic_set() == {"SampleCount": 6.0, "Sum": 13.2, "Minimum": 0.8, "Maximum": 4.0}
    assert (d.percentile(50), d.percentile(99)) == (1.0, 4.0)


def test_distribution_percentiles_nearest_rank() -> None:
    d = Distribution()
    for v in range(1, 101):
        d.add(float(v))
    assert (d.percentile(50), d.percentile(90), d.percentile(99)) == (50.0, 90.0, 99.0)
    assert d.statistic_set() == {
        "SampleCount": 100.0,
        "Sum": 5050.0,
        "Minimum": 1.0,
        "Maximum": 100.0,
    }
    d.add_set(count=2, total=3, minimum=1, maximum=2)
    assert d.percentile(50) is None  # a statistic set has no values to rank


# --- The stand-in shipping to the embedded AWS -------------------------------------------


@pytest.fixture
def clean_aws(moto_server: str) -> Iterator[str]:
    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    yield moto_server


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result is not None:
                return result
        time.sleep(0.2)


def metric_values(
    cw: Any, namespace: str, name: str, dims: dict[str, str], stat: str, since: dt.datetime
) -> list[float]:
    answer = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                    },
                    "Period": 3600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=since,
        EndTime=since + dt.timedelta(hours=1),
    )
    return list(answer["MetricDataResults"][0]["Values"])


def test_stand_in_ships_app_runner_logs_and_metrics(clean_aws: str, tmp_path: Path) -> None:
    since = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
    config = parse_config(
        {
            "state_dir": str(tmp_path / "apprunner"),
            "services": [
                {
                    "name": "observed",
                    "port": 0,
                    "command": [sys.executable, str(INSTANCE)],
                    "env": {"VERSION": "1.0"},
                    "health_check_path": "/readyz",
                    "health_check_interval_seconds": 0.1,
                    "health_check_timeout_seconds": 20,
                    "stop_grace_seconds": 2,
                }
            ],
        }
    )
    shipper = CloudWatchShipper(
        endpoint_url=clean_aws, region="us-east-1", metrics_seconds=0.5, logs_seconds=0.2
    )
    logs = _client("logs", clean_aws)
    cw = _client("cloudwatch", clean_aws)
    with run_in_background(config, shipper=shipper) as running:
        arn = running.service_arns["observed"]
        apprunner = boto3.client(
            "apprunner",
            endpoint_url=running.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        eventually(
            lambda: (
                apprunner.describe_service(ServiceArn=arn)["Service"]["Status"] == "RUNNING" or None
            )
        )
        url = running.service_urls["observed"]
        with httpx.Client() as http:
            for code in [200] * 10 + [404] * 3 + [500] * 2:
                assert http.get(f"{url}/status/{code}").status_code == code
        operation = apprunner.start_deployment(ServiceArn=arn)["OperationId"]
        eventually(
            lambda: (
                apprunner.describe_service(ServiceArn=arn)["Service"]["Status"] == "RUNNING"
                and apprunner.list_operations(ServiceArn=arn)["OperationSummaryList"][0]["Status"]
                == "SUCCEEDED"
                or None
            )
        )
        application, service_group = log_groups("observed", service_id_for("observed"))
        dims = {"ServiceName": "observed", "ServiceID": service_id_for("observed")}

        def requests_counted() -> Any:
            assert metric_values(cw, "AWS/AppRunner", "Requests", dims, "Sum", since) == [15.0]
            return True

        eventually(requests_counted)
        assert metric_values(cw, "AWS/AppRunner", "2xxStatusResponses", dims, "Sum", since) == [
            10.0
        ]
        assert metric_values(cw, "AWS/AppRunner", "4xxStatusResponses", dims, "Sum", since) == [3.0]
        assert metric_values(cw, "AWS/AppRunner", "5xxStatusResponses", dims, "Sum", since) == [2.0]
        assert metric_values(cw, "AWS/AppRunner", "RequestLatency", dims, "SampleCount", since) == [
            15.0
        ]
        assert metric_values(cw, "AWS/AppRunner", "ActiveInstances", dims, "Maximum", since) == [
            1.0
        ]
        assert metric_values(cw, "AWS/AppRunner", "Concurrency", dims, "Maximum", since) == [1.0]
        p99 = metric_values(
            cw,
            "DevStack/Percentiles",
            "RequestLatency",
            {**dims, "SourceNamespace": "AWS/AppRunner", "Statistic": "p99"},
            "Maximum",
            since,
        )
        latency_max = metric_values(cw, "AWS/AppRunner", "RequestLatency", dims, "Maximum", since)
        assert len(p99) == 1 and 0 < p99[0] <= latency_max[0]
        if sys.platform == "linux":
            memory = metric_values(cw, "AWS/AppRunner", "MemoryUtilization", dims, "Maximum", since)
            assert len(memory) == 1 and 0 < memory[0] < 100

        def emf_counted() -> Any:
            per_version = {"Environment": "staging", "Model": "iris", "Version": "1.0"}
            model = {"Environment": "staging", "Model": "iris"}
            predictions = metric_values(
                cw, "ModelDeck/Inference", "Predictions", per_version, "Sum", since
            )
            assert predictions == [45.0]
            assert metric_values(cw, "ModelDeck/Inference", "Predictions", model, "Sum", since) == [
                45.0
            ]
            # Every value of the lines' arrays (15 lines of [1, 2, 30]) is one sample.
            for stat, expected in (
                ("SampleCount", 45.0),
                ("Sum", 495.0),
                ("Maximum", 30.0),
                ("Minimum", 1.0),
            ):
                assert metric_values(
                    cw, "ModelDeck/Inference", "PredictionLatency", per_version, stat, since
                ) == [expected]
            p50 = metric_values(
                cw,
                "DevStack/Percentiles",
                "PredictionLatency",
                {**per_version, "SourceNamespace": "ModelDeck/Inference", "Statistic": "p50"},
                "Average",
                since,
            )
            assert p50 == [2.0]
            return True

        eventually(emf_counted)

        def streams(group: str) -> dict[str, list[str]]:
            found = {}
            for s in logs.describe_log_streams(logGroupName=group)["logStreams"]:
                name = s["logStreamName"]
                events = logs.filter_log_events(logGroupName=group, logStreamNames=[name])["events"]
                found[name] = [e["message"] for e in events]
            return found

        def deployment_logged() -> Any:
            found = streams(service_group)
            assert any(
                f"{operation} succeeded" in m for m in found.get(f"deployment/{operation}", [])
            )
            return found

        service_streams = eventually(deployment_logged)
        assert any("traffic switched" in m for m in service_streams[f"deployment/{operation}"])
        assert any(f"{operation} succeeded" in m for m in service_streams["events"])
        creates = [
            n
            for n in service_streams
            if n.startswith("deployment/") and n != f"deployment/{operation}"
        ]
        assert len(creates) == 1  # the CREATE_SERVICE operation has its own stream
        app_streams = streams(application)
        assert len(app_streams) == 2 and all(n.startswith("instance/") for n in app_streams)
        first = max(app_streams.values(), key=len)
        assert sum('"event": "request"' in m for m in first) == 15
        assert any(m.startswith("ERROR request failed with 500") for m in first)
    assert shipper.dropped == 0


def test_stand_in_ships_under_ecs_names_where_its_ecs_view_says(
    clean_aws: str, tmp_path: Path
) -> None:
    """With ecs=True (the local stack on the ECS target) the lines and numbers
    go where the stand-in's ECS Express view reports them: the primary
    container's awsLogsConfiguration and the revision's managed load balancer
    (what the dashboard's monitoring discovery reads)."""
    since = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
    config = parse_config(
        {
            "state_dir": str(tmp_path / "apprunner"),
            "services": [
                {
                    "name": "observed",
                    "port": 0,
                    "command": [sys.executable, str(INSTANCE)],
                    "env": {"VERSION": "1.0"},
                    "health_check_path": "/readyz",
                    "health_check_interval_seconds": 0.1,
                    "health_check_timeout_seconds": 20,
                    "stop_grace_seconds": 2,
                }
            ],
        }
    )
    shipper = CloudWatchShipper(
        endpoint_url=clean_aws, region="us-east-1", metrics_seconds=0.5, logs_seconds=0.2, ecs=True
    )
    logs = _client("logs", clean_aws)
    cw = _client("cloudwatch", clean_aws)
    with run_in_background(config, shipper=shipper) as running:
        ecs = _client("ecs", running.endpoint_url)
        arn = running.ecs_service_arns["observed"]

        def ready() -> Any:
            service = ecs.describe_express_gateway_service(serviceArn=arn)["service"]
            return service if service["activeConfigurations"] else None

        service = eventually(ready)
        configuration = service["activeConfigurations"][0]
        logging = configuration["primaryContainer"]["awsLogsConfiguration"]
        assert logging == {"logGroup": "/ecs/observed", "logStreamPrefix": "inference"}
        revision = ecs.describe_service_revisions(
            serviceRevisionArns=[configuration["serviceRevisionArn"]]
        )["serviceRevisions"][0]
        path = revision["ecsManagedResources"]["ingressPaths"][0]
        balancer = path["loadBalancer"]["arn"].split(":loadbalancer/", 1)[1]
        group = path["targetGroups"][0]["arn"].split(":", 5)[5]
        assert balancer.startswith("app/") and group.startswith("targetgroup/observed/")
        apprunner = _client("apprunner", running.endpoint_url)
        eventually(
            lambda: (
                apprunner.describe_service(ServiceArn=running.service_arns["observed"])["Service"][
                    "Status"
                ]
                == "RUNNING"
                or None
            )
        )
        url = running.service_urls["observed"]
        with httpx.Client() as http:
            for code in [200] * 6 + [500] * 2:
                assert http.get(f"{url}/status/{code}").status_code == code
        dims = {"LoadBalancer": balancer, "TargetGroup": group}
        alb = "AWS/ApplicationELB"

        def requests_counted() -> Any:
            assert metric_values(cw, alb, "RequestCount", dims, "Sum", since) == [8.0]
            return True

        eventually(requests_counted)
        assert metric_values(cw, alb, "HTTPCode_Target_5XX_Count", dims, "Sum", since) == [2.0]
        assert metric_values(cw, alb, "TargetResponseTime", dims, "SampleCount", since) == [8.0]
        # Seconds, as the ALB reports them: a local request takes well under one.
        assert 0 < metric_values(cw, alb, "TargetResponseTime", dims, "Maximum", since)[0] < 1
        assert metric_values(cw, alb, "HealthyHostCount", dims, "Maximum", since) == [1.0]
        if sys.platform == "linux":
            ecs_dims = {"ClusterName": "devstack", "ServiceName": "observed"}
            memory = metric_values(cw, "AWS/ECS", "MemoryUtilization", ecs_dims, "Maximum", since)
            assert len(memory) == 1 and 0 < memory[0] < 100
        # Not also under App Runner's names.
        app_runner = {"ServiceName": "observed", "ServiceID": service_id_for("observed")}
        assert metric_values(cw, "AWS/AppRunner", "Requests", app_runner, "Sum", since) == []

        def task_lines() -> Any:
            found = logs.describe_log_streams(logGroupName="/ecs/observed")["logStreams"]
            names = [s["logStreamName"] for s in found]
            assert names and all(n.startswith("inference/main/") for n in names)
            events = logs.filter_log_events(logGroupName="/ecs/observed")["events"]
            assert sum('"event": "request"' in e["message"] for e in events) >= 8
            return True

        eventually(task_lines)
    assert shipper.dropped == 0
