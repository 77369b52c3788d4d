"""Monitoring of ECS environments (classic services and Express Mode).

A classic service with an Application Load Balancer runs in the embedded AWS
(moto: ECS, ELBv2, CloudWatch, CloudWatch Logs), where the pages, the API,
the before/after comparison, the logs and the alarms are exercised end to
end. What moto cannot do is pinned down with botocore's Stubber against the
pinned service models: DescribeTargetGroups and the ECS answers the discovery
reads (Express Mode's managed load balancer, blue/green's alternate target
group), the percentile queries of the one GetMetricData per page, and the
alarms' metric math over two target groups.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from dashboard.aws import ecs, elbv2
from dashboard.aws.clients import client as aws_client
from dashboard.aws.clients import reset_clients
from dashboard.aws.errors import AwsTransientError
from dashboard.deployments.models import Deployment, Environment
from dashboard.monitoring import catalog, discovery, logview, metrics, selectors
from dashboard.monitoring.services import (
    MonitoringError,
    alarm_specs,
    monitoring_settings_update,
)
from tests.conftest import publish
from tests.dashboard.factories import make_environment, token_headers

ACCOUNT = "123456789012"
CLUSTER = "modeldeck"
LOG_GROUP = "/ecs/modeldeck-iris-staging"
TASK = "4d1f0e3a9b2c4e5f8a7b6c5d4e3f2a1b"


def boto(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def series(data: dict[str, Any], chart: str, label: str) -> list[Any]:
    found = next(c for c in data["charts"] if c["id"] == chart)
    return next(s["values"] for s in found["series"] if s["label"] == label)


def deploy(environment: Environment, version: str, at: dt.datetime) -> Deployment:
    live = {"live_at": at} if selectors._HAS_LIVE_AT else {}
    return Deployment.objects.create(
        environment=environment,
        to_version=version,
        status="succeeded",
        pointer={"version": version},
        operation_id=f"arn:aws:ecs:us-east-1:{ACCOUNT}:service-deployment/{CLUSTER}/x/abc",
        started_at=at - dt.timedelta(minutes=1),
        finished_at=at,
        **live,
    )


# --- A classic ECS service behind an ALB, in the embedded AWS ----------------------------


class Classic:
    """What the embedded AWS holds for one classic ECS service."""

    def __init__(self, endpoint: str, *, with_load_balancer: bool = True, name: str = "") -> None:
        self.endpoint = endpoint
        ec2, elb, ecs_api = boto("ec2", endpoint), boto("elbv2", endpoint), boto("ecs", endpoint)
        self.load_balancer = self.target_group = ""
        balancers: list[dict[str, Any]] = []
        if with_load_balancer:
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            subnets = [
                ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=z)[
                    "Subnet"
                ]["SubnetId"]
                for i, z in ((1, "us-east-1a"), (2, "us-east-1b"))
            ]
            self.load_balancer = elb.create_load_balancer(
                Name="modeldeck", Subnets=subnets, Type="application"
            )["LoadBalancers"][0]["LoadBalancerArn"]
            self.target_group = elb.create_target_group(
                Name="iris-staging", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
            )["TargetGroups"][0]["TargetGroupArn"]
            elb.create_listener(
                LoadBalancerArn=self.load_balancer,
                Protocol="HTTP",
                Port=80,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": self.target_group}],
            )
            balancers = [
                {
                    "targetGroupArn": self.target_group,
                    "containerName": "inference",
                    "containerPort": 8080,
                }
            ]
        ecs_api.create_cluster(clusterName=CLUSTER)
        logging = {
            "logDriver": "awslogs",
            "options": {"awslogs-group": LOG_GROUP, "awslogs-stream-prefix": "inference"},
        }
        definition = ecs_api.register_task_definition(
            family=name or "modeldeck-iris-staging",
            containerDefinitions=[
                # A sidecar first: the discovery must pick the container that reads the pointer.
                {"name": "proxy", "image": "envoy", "memory": 128, "logConfiguration": logging},
                {
                    "name": "inference",
                    "image": "inference",
                    "memory": 512,
                    "environment": [
                        {"name": "MODEL_SSM_PARAMETER", "value": "/models/iris/staging:1"}
                    ],
                    "logConfiguration": logging,
                },
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        self.service_arn = ecs_api.create_service(
            cluster=CLUSTER,
            serviceName=name or "modeldeck-iris-staging",
            taskDefinition=definition,
            desiredCount=1,
            loadBalancers=balancers,
        )["service"]["serviceArn"]

    @property
    def alb_dims(self) -> list[dict[str, str]]:
        return [
            {
                "Name": "LoadBalancer",
                "Value": self.load_balancer.split(":loadbalancer/", 1)[1],
            },
            {"Name": "TargetGroup", "Value": self.target_group.split(":", 5)[5]},
        ]

    def put(self, namespace: str, data: list[tuple[str, dt.datetime, float]]) -> None:
        dims = (
            self.alb_dims
            if namespace == catalog.ALB_NAMESPACE
            else [
                {"Name": "ClusterName", "Value": CLUSTER},
                {"Name": "ServiceName", "Value": "modeldeck-iris-staging"},
            ]
        )
        boto("cloudwatch", self.endpoint).put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": value}
                for name, at, value in data
            ],
        )


@pytest.fixture
def base_time() -> dt.datetime:
    return (timezone.now() - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def classic(aws: str, monkeypatch: pytest.MonkeyPatch) -> Classic:
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    reset_clients()
    return Classic(aws)


def _environment(
    service_arn: str, target: str, tmp_path: Path, settings: Any, *, s3: bool = True
) -> Environment:
    settings.MONITORING_ALARM_CACHE_SECONDS = 0
    settings.CLOUDWATCH_PERCENTILES_NAMESPACE = ""
    if s3:
        publish("iris", "1.0", tmp_path)
    environment = make_environment(
        "iris",
        "staging",
        target=target,
        service_arn=service_arn,
        service_url="http://127.0.0.1:9",
    )
    Environment.objects.filter(pk=environment.pk).update(promoted_version="1.0")
    environment.refresh_from_db()
    discovery.monitored_service_forget(environment=environment)
    return environment


@pytest.fixture
def env(classic: Classic, db: Any, tmp_path: Path, settings: Any) -> Environment:
    return _environment(classic.service_arn, Environment.Target.ECS, tmp_path, settings)


@pytest.fixture
def signed_in(client: Client, personas: Any) -> Iterator[Any]:
    def sign_in(persona: str) -> Client:
        client.force_login(personas[persona])
        return client

    yield sign_in


def test_classic_service_is_found_through_ecs_and_its_target_group(
    env: Environment, classic: Classic
) -> None:
    service = selectors.environment_service(environment=env)
    assert service.platform == "ecs" and service.label == "ECS service modeldeck-iris-staging"
    alb = tuple((d["Name"], d["Value"]) for d in classic.alb_dims)
    assert alb[0][1].startswith("app/modeldeck/") and alb[1][1].startswith("targetgroup/")
    requests = service.source("Requests")
    assert requests == catalog.MetricSource("AWS/ApplicationELB", "RequestCount", (alb,))
    latency = service.source("RequestLatency")
    assert latency is not None and latency.metric_name == "TargetResponseTime"
    assert latency.scale == 1000.0  # the ALB reports seconds
    assert service.source("CPUUtilization") == catalog.MetricSource(
        "AWS/ECS",
        "CPUUtilization",
        ((("ClusterName", CLUSTER), ("ServiceName", "modeldeck-iris-staging")),),
    )
    assert service.source("Concurrency") is None  # App Runner only
    # The inference container's awslogs destination, not the sidecar's streams.
    assert service.logs == catalog.LogLayout(
        application_group=LOG_GROUP, application_prefix="inference/inference/"
    )
    assert [c.id for c in service.charts] == [
        "requests",
        "status",
        "error_rate",
        "latency",
        "instances",
        "cpu",
        "memory",
        "predictions",
        "prediction_latency",
        "batch_size",
        "prediction_errors",
        "model_load",
    ]


def test_ecs_page_data_from_the_load_balancer_and_ecs_in_one_call(
    env: Environment, classic: Classic, base_time: dt.datetime
) -> None:
    t = base_time
    s = dt.timedelta(seconds=1)
    classic.put(
        catalog.ALB_NAMESPACE,
        [
            ("RequestCount", t + 5 * s, 30),
            ("RequestCount", t + 35 * s, 10),
            ("HTTPCode_Target_2XX_Count", t + 5 * s, 36),
            ("HTTPCode_Target_5XX_Count", t + 35 * s, 4),
            ("RequestCount", t + 121 * s, 50),
            ("HealthyHostCount", t + 10 * s, 2),
        ],
    )
    classic.put(
        catalog.ECS_NAMESPACE,
        [("CPUUtilization", t + 1 * s, 20), ("CPUUtilization", t + 31 * s, 40)],
    )
    window = metrics.window_custom(start=t, end=t + dt.timedelta(minutes=3), period=60)
    data = metrics.metrics_page_data(environment=env, window=window)
    assert data["platform"] == "ecs" and data["cloudwatch_calls"] == 1
    assert series(data, "requests", "Requests") == [40.0, 0.0, 50.0]
    assert series(data, "status", "5xx") == [4.0, 0.0, 0.0]
    assert series(data, "status", "2xx") == [36.0, 0.0, 0.0]
    assert series(data, "error_rate", "5xx") == [10.0, None, 0.0]
    assert series(data, "cpu", "CPU") == [30.0, None, None]
    assert series(data, "instances", "Healthy tasks") == [2.0, None, None]
    assert series(data, "instances", "Running tasks") == [None, None, None]  # no Insights
    assert "concurrency" not in [c["id"] for c in data["charts"]]
    # 4 counts + 3 latency percentiles + healthy hosts (ALB), CPU, memory (ECS),
    # running tasks (Container Insights), and 5 inference queries for version 1.0.
    assert data["queries"] == 16
    assert data["notes"] == []


def test_ecs_metrics_pages_and_api(
    env: Environment, classic: Classic, signed_in: Any, personas: Any, base_time: dt.datetime
) -> None:
    classic.put(catalog.ALB_NAMESPACE, [("RequestCount", base_time + dt.timedelta(seconds=5), 7)])
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/metrics/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-platform="ecs"' in html and "AWS/ApplicationELB" in html
    data = client.get("/models/iris/environments/staging/metrics/data?range=6h")
    assert data.status_code == 200
    assert [c["id"] for c in data.json()["charts"]][:5] == [
        "requests",
        "status",
        "error_rate",
        "latency",
        "instances",
    ]
    headers = token_headers(personas["viewer"])
    start = base_time.isoformat().replace("+00:00", "Z")
    end = (base_time + dt.timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    api = client.get(
        f"/api/models/iris/environments/staging/metrics?metric=Requests&start={start}&end={end}",
        headers=headers,
    )
    assert api.status_code == 200
    assert api.json()["points"] == [[start, 7.0], [start.replace(":00:00Z", ":01:00Z"), 0.0]]
    concurrency = client.get(
        "/api/models/iris/environments/staging/metrics?metric=Concurrency", headers=headers
    )
    assert concurrency.status_code == 400
    assert "not published for the ECS service" in concurrency.json()["detail"]


def test_ecs_before_after_comparison(
    env: Environment, classic: Classic, base_time: dt.datetime
) -> None:
    pivot = base_time
    deployment = deploy(env, "2.0", pivot + dt.timedelta(seconds=20))
    m = dt.timedelta(minutes=1)
    classic.put(
        catalog.ALB_NAMESPACE,
        [
            ("RequestCount", pivot - 30 * m, 100),
            ("HTTPCode_Target_5XX_Count", pivot - 30 * m, 1),
            ("RequestCount", pivot + 10 * m, 40),
            ("RequestCount", pivot + 40 * m, 60),
            ("HTTPCode_Target_5XX_Count", pivot + 40 * m, 10),
        ],
    )
    result = metrics.deployment_comparison(deployment=deployment, now=pivot + 2 * 60 * m)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["requests"]["before"] == 1.67 and rows["requests"]["after"] == 1.67  # per min
    assert rows["error_rate"]["before"] == 1.0 and rows["error_rate"]["after"] == 10.0
    assert rows["error_rate"]["worse"] is True


# --- Logs ------------------------------------------------------------------------------------


@pytest.fixture
def task_logs(env: Environment, aws: str) -> int:
    """Lines of the inference container of one task, and of a sidecar; the base ms."""
    logs = boto("logs", aws)
    base = (int(time.time()) - 600) * 1000
    logs.create_log_group(logGroupName=LOG_GROUP)
    streams = {
        f"inference/inference/{TASK}": [
            (
                base + i * 1000,
                json.dumps(
                    {
                        "event": "request",
                        "method": "POST",
                        "path": "/predict",
                        "status": 500 if i == 3 else 200,
                        "duration_ms": 2.5,
                        "version": "1.0",
                    }
                ),
            )
            for i in range(5)
        ]
        + [(base + 6000, "model loaded")],
        f"inference/proxy/{TASK}": [(base + 100, "sidecar chatter")],
    }
    for stream, events in streams.items():
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": ts, "message": message} for ts, message in events],
        )
    return base


def test_ecs_logs_read_the_inference_containers_awslogs_streams(
    env: Environment, task_logs: int
) -> None:
    start = dt.datetime.fromtimestamp(task_logs / 1000 - 60, tz=dt.UTC)
    end = start + dt.timedelta(minutes=10)
    result = logview.logs_read(environment=env, start=start, end=end)
    assert [line.text for line in result.lines][0] == "model loaded"
    assert len(result.lines) == 6  # the sidecar's line is not the application's
    assert {line.stream for line in result.lines} == {f"inference/inference/{TASK}"}
    assert [line.request["status"] for line in result.lines if line.request][1] == 500
    one = logview.logs_read(environment=env, stream=f"inference/proxy/{TASK}", start=start, end=end)
    assert [line.message for line in one.lines] == ["sidecar chatter"]
    with pytest.raises(logview.LogQueryError, match="no service log group"):
        logview.logs_read(environment=env, stream="service", start=start, end=end)
    streams = logview.stream_names(environment=env)
    assert streams == {"application": [f"inference/inference/{TASK}"], "service": []}


def test_ecs_logs_page_api_and_deployment_fragment(
    env: Environment, task_logs: int, signed_in: Any, personas: Any
) -> None:
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/logs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="log-line') == 6
    assert 'value="service"' not in html and LOG_GROUP in html
    assert "ECS writes no service log" in html
    refused = client.get("/models/iris/environments/staging/logs/?stream=service")
    assert refused.status_code == 400 and "no service log group" in refused.content.decode()
    api = client.get(
        "/api/models/iris/environments/staging/logs", headers=token_headers(personas["viewer"])
    )
    assert api.status_code == 200 and len(api.json()["events"]) == 6
    live = dt.datetime.fromtimestamp(task_logs / 1000, tz=dt.UTC) + dt.timedelta(seconds=3)
    deployment = deploy(env, "2.0", live)
    fragment = client.get(f"/deployments/{deployment.pk}/monitoring")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'id="no-deployment-stream"' in html and "deployment/&lt;operation-id&gt;" in html
    assert 'id="deployment-application-logs"' in html and "model loaded" in html
    assert 'id="deployment-comparison"' in html


# --- Alarms and the bake window ----------------------------------------------------------


def test_ecs_alarms_watch_the_target_group_and_the_bake_window_reads_them(
    env: Environment, classic: Classic, aws: str
) -> None:
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    alarms = {a["AlarmName"]: a for a in boto("cloudwatch", aws).describe_alarms()["MetricAlarms"]}
    assert sorted(alarms) == [
        "modeldeck-iris-staging-5xx-rate",
        "modeldeck-iris-staging-p99-latency",
    ]
    names = {
        q["MetricStat"]["Metric"]["MetricName"]
        for a in alarms.values()
        for q in a["Metrics"]
        if "MetricStat" in q
    }
    assert names == {"RequestCount", "HTTPCode_Target_5XX_Count", "TargetResponseTime"}
    assert selectors.bake_minutes(environment=env) == 10
    boto("cloudwatch", aws).set_alarm_state(
        AlarmName="modeldeck-iris-staging-5xx-rate", StateValue="ALARM", StateReason="test"
    )
    assert [s.kind for s in selectors.alarms_firing(environment=env)] == ["5xx-rate"]


def test_ecs_alarm_definitions_match_cloudwatchs_model(env: Environment, classic: Classic) -> None:
    """Stubber checks the requests against botocore's model: the ALB's
    dimensions, p99 of TargetResponseTime turned into ms by metric math."""
    stubber = Stubber(aws_client("cloudwatch"))
    stubber.activate()
    dims = classic.alb_dims

    def stat(qid: str, name: str, statistic: str) -> dict[str, Any]:
        return {
            "Id": qid,
            "ReturnData": False,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/ApplicationELB",
                    "MetricName": name,
                    "Dimensions": dims,
                },
                "Period": 60,
                "Stat": statistic,
            },
        }

    common = {
        "ActionsEnabled": False,
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "TreatMissingData": "notBreaching",
        "Tags": ANY,
        "AlarmDescription": ANY,
    }
    stubber.add_response(
        "put_metric_alarm",
        {},
        {
            **common,
            "AlarmName": "modeldeck-iris-staging-5xx-rate",
            "Threshold": 5.0,
            "Metrics": [
                stat("requests", "RequestCount", "Sum"),
                stat("errors", "HTTPCode_Target_5XX_Count", "Sum"),
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
            "Threshold": 2000.0,
            "Metrics": [
                stat("latency", "TargetResponseTime", "p99"),
                {
                    "Id": "p99",
                    "ReturnData": True,
                    "Expression": "1000 * latency",
                    "Label": "p99 (ms)",
                },
            ],
        },
    )
    monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    stubber.assert_no_pending_responses()
    stubber.deactivate()


def test_an_ecs_service_without_a_load_balancer(
    aws: str, db: Any, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    reset_clients()
    bare = Classic(aws, with_load_balancer=False)
    env = _environment(bare.service_arn, Environment.Target.ECS, tmp_path, settings)
    service = selectors.environment_service(environment=env)
    assert service.source("Requests") is None and service.source("CPUUtilization") is not None
    now = timezone.now()
    window = metrics.window_custom(start=now - dt.timedelta(hours=1), end=now, period=300)
    data = metrics.metrics_page_data(environment=env, window=window)
    ids = [c["id"] for c in data["charts"]]
    assert "requests" not in ids and "latency" not in ids and "cpu" in ids
    # Container Insights only: asked, empty here.
    assert series(data, "instances", "Running tasks") == [None] * len(data["timestamps"])
    assert any("no Application Load Balancer" in note for note in data["notes"])
    with pytest.raises(MonitoringError, match="publishes no request metrics"):
        monitoring_settings_update(environment=env, user=None, values={"alarms_enabled": True})
    assert selectors.bake_minutes(environment=env) == 0


def test_a_bad_ecs_arn_is_a_409_not_a_500(
    aws: str, db: Any, tmp_path: Path, settings: Any, signed_in: Any
) -> None:
    arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/{CLUSTER}/does-not-exist"
    env = _environment(arn, Environment.Target.ECS, tmp_path, settings)
    with pytest.raises(catalog.NotAServiceArn, match="ECS does not know the service"):
        selectors.environment_service(environment=env)
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/metrics/")
    assert page.status_code == 409 and "No service to monitor" in page.content.decode()
    assert client.get("/models/iris/environments/staging/logs/").status_code == 400


# --- Stubber: what moto does not model ---------------------------------------------------

SERVICE = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/{CLUSTER}/modeldeck-iris-production"
REVISION = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service-revision/{CLUSTER}/modeldeck-iris-production/1"
ELB = f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}"
LB = f"{ELB}:loadbalancer/app/ecs-express-gateway-alb-1a2b/50dc6c495c0c9188"
TG_BLUE = f"{ELB}:targetgroup/ecs-gateway-tg-blue/73e2d6bc24d8a067"
TG_GREEN = f"{ELB}:targetgroup/ecs-gateway-tg-green/2453ed029918f21f"
T0 = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Stubber]]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    reset_clients()
    stubbers = {name: Stubber(aws_client(name)) for name in ("ecs", "elbv2", "cloudwatch")}
    for stubber in stubbers.values():
        stubber.activate()
    yield stubbers
    for stubber in stubbers.values():
        stubber.deactivate()
    reset_clients()


def test_describe_target_groups_contract(stubbed: dict[str, Stubber]) -> None:
    elb = stubbed["elbv2"]
    elb.add_response(
        "describe_target_groups",
        {
            "TargetGroups": [
                {
                    "TargetGroupArn": TG_BLUE,
                    "TargetGroupName": "ecs-gateway-tg-blue",
                    "Protocol": "HTTP",
                    "Port": 8080,
                    "TargetType": "ip",
                    "LoadBalancerArns": [LB],
                },
                {"TargetGroupArn": TG_GREEN, "TargetGroupName": "g", "LoadBalancerArns": []},
            ]
        },
        {"TargetGroupArns": [TG_BLUE, TG_GREEN]},
    )
    found = elbv2.describe_target_groups(target_group_arns=[TG_BLUE, TG_GREEN, TG_BLUE, ""])
    assert found == [
        elbv2.TargetGroupInfo(TG_BLUE, "ecs-gateway-tg-blue", (LB,), "ip"),
        elbv2.TargetGroupInfo(TG_GREEN, "g", (), ""),
    ]
    elb.add_client_error(
        "describe_target_groups",
        service_error_code="TargetGroupNotFound",
        http_status_code=400,
        expected_params={"TargetGroupArns": [TG_BLUE]},
    )
    assert elbv2.describe_target_groups(target_group_arns=[TG_BLUE]) == []
    elb.add_client_error(
        "describe_target_groups", service_error_code="Throttling", http_status_code=400
    )
    with pytest.raises(AwsTransientError):
        elbv2.describe_target_groups(target_group_arns=[TG_BLUE])
    assert elbv2.describe_target_groups(target_group_arns=[]) == []
    elb.assert_no_pending_responses()


def managed(arn: str) -> dict[str, Any]:
    return {
        "arn": arn,
        "status": "ACTIVE",
        "updatedAt": T0,
        "healthCheckPath": "/readyz",
        "healthCheckPort": 8080,
        "port": 8080,
    }


def _express_answers(stubbed: dict[str, Stubber]) -> None:
    stubbed["ecs"].add_response(
        "describe_express_gateway_service",
        {
            "service": {
                "cluster": CLUSTER,
                "serviceName": "modeldeck-iris-production",
                "serviceArn": SERVICE,
                "status": {"statusCode": "ACTIVE"},
                "activeConfigurations": [
                    {
                        "serviceRevisionArn": REVISION,
                        "taskDefinitionArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/x:3",
                        "primaryContainer": {
                            "image": "inference:abc",
                            "awsLogsConfiguration": {
                                "logGroup": "/ecs/modeldeck-iris-production",
                                "logStreamPrefix": "inference",
                            },
                        },
                        "createdAt": T0,
                    }
                ],
            }
        },
        {"serviceArn": SERVICE},
    )
    stubbed["ecs"].add_response(
        "describe_service_revisions",
        {
            "serviceRevisions": [
                {
                    "serviceRevisionArn": REVISION,
                    "serviceArn": SERVICE,
                    "taskDefinition": f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/x:3",
                    "ecsManagedResources": {
                        "ingressPaths": [
                            {
                                "accessType": "PUBLIC",
                                "endpoint": "ip-abc.ecs.us-east-1.on.aws",
                                "loadBalancer": {
                                    "arn": LB,
                                    "status": "ACTIVE",
                                    "updatedAt": T0,
                                    "scheme": "internet-facing",
                                },
                                # A canary moves traffic between two target groups.
                                "targetGroups": [managed(TG_BLUE), managed(TG_GREEN)],
                            }
                        ]
                    },
                }
            ],
            "failures": [],
        },
        {"serviceRevisionArns": [REVISION]},
    )


@pytest.fixture
def express_env(db: Any, tmp_path: Path, settings: Any) -> Environment:
    return _environment(SERVICE, Environment.Target.ECS_EXPRESS, tmp_path, settings, s3=False)


def test_express_service_is_found_through_its_managed_load_balancer_and_cached(
    stubbed: dict[str, Stubber], express_env: Environment
) -> None:
    _express_answers(stubbed)
    service = selectors.environment_service(environment=express_env)
    stubbed["ecs"].assert_no_pending_responses()
    assert service.label == "ECS Express Mode service modeldeck-iris-production"
    lb = ("LoadBalancer", "app/ecs-express-gateway-alb-1a2b/50dc6c495c0c9188")
    requests = service.source("Requests")
    assert requests is not None and requests.dimension_sets == (
        (lb, ("TargetGroup", "targetgroup/ecs-gateway-tg-blue/73e2d6bc24d8a067")),
        (lb, ("TargetGroup", "targetgroup/ecs-gateway-tg-green/2453ed029918f21f")),
    )
    assert service.logs == catalog.LogLayout("/ecs/modeldeck-iris-production", "inference/")
    # Reused: no more ECS calls (the Stubber has no answers left: a call would raise).
    assert selectors.environment_service(environment=express_env) == service
    discovery.monitored_service_forget(environment=express_env)
    _express_answers(stubbed)
    assert selectors.environment_service(environment=express_env) == service
    stubbed["ecs"].assert_no_pending_responses()


def test_one_get_metric_data_for_an_express_canary_sums_counts_and_takes_the_worst_latency(
    stubbed: dict[str, Stubber], express_env: Environment
) -> None:
    """Two target groups: every ALB metric is asked of both in the same call;
    counts add up, latency takes the worse (seconds become ms)."""
    _express_answers(stubbed)
    cw = stubbed["cloudwatch"]
    sent: list[dict[str, Any]] = []
    aws_client("cloudwatch").meta.events.register(
        "before-parameter-build.cloudwatch.GetMetricData",
        lambda params, **_: sent.append(params),
    )
    window = metrics.window_custom(start=T0, end=T0 + dt.timedelta(minutes=2), period=60)
    cw.add_response("get_metric_data", {"MetricDataResults": [], "Messages": []})
    metrics.metrics_page_data(environment=express_env, window=window)
    queries = sent[0]["MetricDataQueries"]

    def qid(name: str, stat: str, group: str) -> str:
        return next(
            q["Id"]
            for q in queries
            if q["MetricStat"]["Metric"]["MetricName"] == name
            and q["MetricStat"]["Stat"] == stat
            and any(group in d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"])
        )

    alb = [q for q in queries if q["MetricStat"]["Metric"]["Namespace"] == "AWS/ApplicationELB"]
    # 4 counts, 3 percentiles and healthy hosts, for each of the two target groups.
    assert len(alb) == 16
    assert {q["MetricStat"]["Stat"] for q in alb} == {"Sum", "p50", "p90", "p99", "Maximum"}
    cache.clear()  # the answer and the discovery: both asked again
    _express_answers(stubbed)
    t = [T0, T0 + dt.timedelta(minutes=1)]
    results = [
        (qid("RequestCount", "Sum", "blue"), [t[0], t[1]], [90.0, 50.0]),
        (qid("RequestCount", "Sum", "green"), [t[0]], [10.0]),
        (qid("HTTPCode_Target_5XX_Count", "Sum", "green"), [t[0]], [5.0]),
        (qid("TargetResponseTime", "p99", "blue"), [t[0], t[1]], [0.120, 0.080]),
        (qid("TargetResponseTime", "p99", "green"), [t[0]], [0.250]),
        (qid("HealthyHostCount", "Maximum", "blue"), [t[0]], [3.0]),
        (qid("HealthyHostCount", "Maximum", "green"), [t[0]], [1.0]),
    ]
    cw.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": i, "Label": i, "Timestamps": ts, "Values": vs, "StatusCode": "Complete"}
                for i, ts, vs in results
            ],
            "Messages": [],
        },
        {
            "MetricDataQueries": queries,
            "StartTime": window.start,
            "EndTime": window.end,
            "ScanBy": "TimestampAscending",
        },
    )
    data = metrics.metrics_page_data(environment=express_env, window=window)
    cw.assert_no_pending_responses()
    assert series(data, "requests", "Requests") == [100.0, 50.0]
    assert series(data, "error_rate", "5xx") == [5.0, 0.0]
    assert series(data, "latency", "p99") == [250.0, 80.0]
    assert series(data, "instances", "Healthy tasks") == [4.0, None]


def test_alarms_over_two_target_groups_fill_the_quiet_one(
    stubbed: dict[str, Stubber], express_env: Environment
) -> None:
    _express_answers(stubbed)
    from dashboard.monitoring.models import MonitoringSettings

    row = MonitoringSettings(environment=express_env, alarms_enabled=True)
    rate, latency = alarm_specs(row)
    expression = rate.metrics[-1].expression
    total = "(FILL(requests0, 0) + FILL(requests1, 0))"
    failed = "(FILL(errors0, 0) + FILL(errors1, 0))"
    assert expression == f"IF({total} >= 10, 100 * {failed} / {total}, 0)"
    assert latency.metrics[-1].expression == "1000 * MAX([latency0, latency1])"
    stubbed["cloudwatch"].add_response("put_metric_alarm", {})
    stubbed["cloudwatch"].add_response("put_metric_alarm", {})
    from dashboard.aws import cloudwatch

    for spec in (rate, latency):  # both valid for CloudWatch's model
        cloudwatch.put_metric_alarm(spec=spec)
    stubbed["cloudwatch"].assert_no_pending_responses()


def test_ecs_describes_report_what_monitoring_reads(stubbed: dict[str, Stubber]) -> None:
    """The members the discovery reads, parsed from answers the model accepts."""
    stub = stubbed["ecs"]
    stub.add_response(
        "describe_services",
        {
            "services": [
                {
                    "serviceArn": SERVICE,
                    "serviceName": "modeldeck-iris-production",
                    "taskDefinition": "td:1",
                    "loadBalancers": [
                        {
                            "targetGroupArn": TG_BLUE,
                            "containerName": "inference",
                            "containerPort": 8080,
                            "advancedConfiguration": {
                                "alternateTargetGroupArn": TG_GREEN,
                                "productionListenerRule": f"{ELB}:listener-rule/app/x/1/2/3",
                                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/ecs-bluegreen",
                            },
                        },
                        {"loadBalancerName": "classic-elb", "containerName": "inference"},
                    ],
                }
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "services": [SERVICE]},
    )
    info = ecs.describe_service(cluster=CLUSTER, service=SERVICE)
    assert info.load_balancers == (ecs.LoadBalancerRef(TG_BLUE, TG_GREEN, "inference"),)
    stub.assert_no_pending_responses()


def test_ecs_settings_page_says_what_the_alarms_watch(
    env: Environment, classic: Classic, signed_in: Any
) -> None:
    page = signed_in("admin").get("/models/iris/environments/staging/monitoring/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="alarm-source"' in html and "HTTPCode_Target_5XX_Count" in html


# --- The local stack on the ECS target -----------------------------------------------------


def test_local_ecs_stand_in_gives_the_pages_real_numbers_and_lines(
    aws: str, db: Any, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in's ECS view (MODELDECK_DEVSTACK_TARGET=ecs_express) reports
    an awslogs group and a managed load balancer, and its shipper publishes
    under those names: the dashboard's discovery finds them, the requests sent
    show up in the charts (latency in ms from the pre-computed percentiles)
    and their lines in the logs."""
    import sys

    import httpx

    from devstack.apprunner.config import parse_config
    from devstack.apprunner.observability import CloudWatchShipper
    from devstack.apprunner.server import run_in_background

    config = parse_config(
        {
            "region": "us-east-1",
            "account_id": "000000000000",
            "state_dir": str(tmp_path / "apprunner"),
            "services": [
                {
                    "name": "iris-staging",
                    "port": 0,
                    "command": [
                        sys.executable,
                        str(Path(__file__).parents[1] / "devstack" / "observed_instance.py"),
                    ],
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
        endpoint_url=aws, region="us-east-1", metrics_seconds=60, logs_seconds=60, ecs=True
    )
    started = timezone.now()
    with run_in_background(config, shipper=shipper) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", running.endpoint_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_APPRUNNER", running.endpoint_url)
        reset_clients()
        env = _environment(
            running.ecs_service_arns["iris-staging"],
            Environment.Target.ECS_EXPRESS,
            tmp_path,
            settings,
        )
        settings.CLOUDWATCH_PERCENTILES_NAMESPACE = "DevStack/Percentiles"
        from tests.dashboard.conftest import wait_running

        wait_running(running.service_arns["iris-staging"])
        with httpx.Client() as http:
            for code in [200] * 5 + [500]:
                url = running.service_urls["iris-staging"]
                assert http.get(f"{url}/status/{code}").status_code == code
        service = selectors.environment_service(environment=env)
        assert service.source("Requests") is not None and service.logs is not None
        window = metrics.window_custom(
            start=started - dt.timedelta(minutes=2),
            end=timezone.now() + dt.timedelta(minutes=1),
            period=60,
        )
        # The stand-in counts a request as its response goes out, maybe just
        # after the client has it: ship and look until all six are in.
        deadline = time.monotonic() + 20
        while True:
            shipper.flush()
            cache.clear()
            data = metrics.metrics_page_data(environment=env, window=window)
            counted = sum(v for v in series(data, "requests", "Requests") if v)
            if counted >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not any("load balancer" in note for note in data["notes"])
        assert sum(v for v in series(data, "requests", "Requests") if v) == 6.0
        assert sum(v for v in series(data, "status", "5xx") if v) == 1.0
        p99 = [v for v in series(data, "latency", "p99") if v is not None]
        assert p99 and all(0 < v < 1000 for v in p99)  # ms, from the ALB's seconds
        deadline = time.monotonic() + 20
        while True:  # the instance's lines reach the stand-in asynchronously too
            shipper.flush()
            lines = logview.logs_read(
                environment=env,
                start=started - dt.timedelta(minutes=1),
                end=timezone.now() + dt.timedelta(minutes=1),
            ).lines
            requests = sum(1 for line in lines if line.kind == "request")
            if requests >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(1 for line in lines if line.kind == "request") == 6
        assert {line.stream.rsplit("/", 1)[0] for line in lines} == {"inference/main"}
    reset_clients()


def test_an_unreadable_load_balancer_leaves_the_request_charts_out_with_a_note(
    stubbed: dict[str, Stubber], db: Any, tmp_path: Path, settings: Any
) -> None:
    env = _environment(SERVICE, Environment.Target.ECS, tmp_path, settings, s3=False)
    stubbed["ecs"].add_response(
        "describe_services",
        {
            "services": [
                {
                    "serviceArn": SERVICE,
                    "serviceName": "modeldeck-iris-production",
                    "taskDefinition": "modeldeck-iris-production:4",
                    "loadBalancers": [{"targetGroupArn": TG_BLUE, "containerName": "inference"}],
                }
            ],
            "failures": [],
        },
        {"cluster": CLUSTER, "services": [SERVICE]},
    )
    stubbed["ecs"].add_response(
        "describe_task_definition",
        {
            "taskDefinition": {
                "taskDefinitionArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/x:4",
                "containerDefinitions": [
                    {"name": "inference", "image": "inference:abc", "essential": True}
                ],
            }
        },
        {"taskDefinition": "modeldeck-iris-production:4"},
    )
    stubbed["elbv2"].add_client_error(
        "describe_target_groups",
        service_error_code="AccessDenied",
        http_status_code=403,
        expected_params={"TargetGroupArns": [TG_BLUE]},
    )
    service = selectors.environment_service(environment=env)
    assert service.source("Requests") is None and service.source("CPUUtilization") is not None
    assert "could not be read" in service.notes[0] and "AccessDenied" in service.notes[0]
    # No awslogs driver: the logs say why instead of reading nothing.
    assert service.logs is None and "awslogs" in service.logs_problem
    with pytest.raises(logview.LogQueryError, match="no CloudWatch Logs for the ECS service"):
        logview.log_source(environment=env, stream="application")
    for stubber in stubbed.values():
        stubber.assert_no_pending_responses()


def test_ecs_not_answering_is_a_503_that_says_so(
    stubbed: dict[str, Stubber], express_env: Environment, signed_in: Any
) -> None:
    for _ in range(2):  # the page, then its data
        stubbed["ecs"].add_client_error(
            "describe_express_gateway_service",
            service_error_code="ThrottlingException",
            http_status_code=400,
        )
    client = signed_in("viewer")
    page = client.get("/models/iris/environments/staging/metrics/")
    assert page.status_code == 503 and "ECS is not answering" in page.content.decode()
    data = client.get("/models/iris/environments/staging/metrics/data?range=1h")
    assert data.status_code == 503
    assert data.json()["detail"].startswith("AWS: DescribeExpressGatewayService")
    stubbed["ecs"].assert_no_pending_responses()
