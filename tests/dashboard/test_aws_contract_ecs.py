"""Contract tests of the ECS target (Express Mode and classic services),
checked by botocore's Stubber against the ECS service model of the pinned
botocore: every call, every service deployment status and lifecycle stage the
model lists, and how refusals read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from django.utils import timezone

from dashboard.aws.clients import client, reset_clients
from dashboard.aws.errors import AwsTransientError
from dashboard.deployments.targets import Phase, TargetBusy, TargetError
from dashboard.deployments.targets.ecs import (
    PHASES,
    STAGES,
    EcsExpressTarget,
    EcsServiceTarget,
)

ACCOUNT = "123456789012"
PREFIX = f"arn:aws:ecs:us-east-1:{ACCOUNT}"
SERVICE = f"{PREFIX}:service/modeldeck/iris-staging"
DEPLOYMENT = f"{PREFIX}:service-deployment/modeldeck/iris-staging/Kq3bWb1XWnUdbXWQdyIKx"
EARLIER_DEPLOYMENT = f"{PREFIX}:service-deployment/modeldeck/iris-staging/Zz9aaaaaaaaaaaaaaaaaa"
REVISION_OLD = f"{PREFIX}:service-revision/modeldeck/iris-staging/4980306466373577095"
REVISION_NEW = f"{PREFIX}:service-revision/modeldeck/iris-staging/4980306466373577096"
TD_OLD = f"{PREFIX}:task-definition/iris-staging:6"
TD_NEW = f"{PREFIX}:task-definition/iris-staging:7"
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/modeldeck-inference:abc123"
ACTIVE = ["PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"]


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECS", raising=False)
    reset_clients()
    yield
    reset_clients()


@pytest.fixture
def ecs() -> Iterator[Stubber]:
    stubber = Stubber(client("ecs"))
    stubber.activate()
    yield stubber
    stubber.deactivate()


def container(pin: str = "/models/iris/staging:6", **extra: Any) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "containerPort": 8080,
        "awsLogsConfiguration": {"logGroup": "/ecs/iris-staging", "logStreamPrefix": "inference"},
        "environment": [
            {"name": "MODEL_SSM_PARAMETER", "value": pin},
            {"name": "MODEL_CACHE_DIR", "value": "/tmp/models"},
        ],
        "secrets": [
            {
                "name": "INFERENCE_API_KEYS",
                "valueFrom": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:keys-AbCdEf",
            }
        ],
        **extra,
    }


def express(*configurations: tuple[str, dict[str, Any], dt.datetime]) -> dict[str, Any]:
    return {
        "service": {
            "cluster": "modeldeck",
            "serviceName": "iris-staging",
            "serviceArn": SERVICE,
            "infrastructureRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ecsInfrastructureRole",
            "status": {"statusCode": "ACTIVE"},
            "currentDeployment": DEPLOYMENT,
            "activeConfigurations": [
                {
                    "serviceRevisionArn": arn,
                    "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/modeldeck/inference/exec",
                    "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/modeldeck/inference/task",
                    "cpu": "1024",
                    "memory": "2048",
                    "healthCheckPath": "/readyz",
                    "primaryContainer": primary,
                    "ingressPaths": [
                        {"accessType": "PRIVATE", "endpoint": "iris-staging.internal"},
                        {"accessType": "PUBLIC", "endpoint": "is-abc.ecs.us-east-1.on.aws"},
                    ],
                    "createdAt": created,
                }
                for arn, primary, created in configurations
            ],
            "createdAt": NOW - dt.timedelta(days=3),
            "updatedAt": NOW,
        }
    }


def brief(
    status: str = "IN_PROGRESS",
    *,
    arn: str = DEPLOYMENT,
    revision: str = REVISION_NEW,
    created: dt.datetime = NOW,
) -> dict[str, Any]:
    return {
        "serviceDeploymentArn": arn,
        "serviceArn": SERVICE,
        "clusterArn": f"{PREFIX}:cluster/modeldeck",
        "createdAt": created,
        "startedAt": created,
        "targetServiceRevisionArn": revision,
        "status": status,
    }


def expect_active(stubber: Stubber, found: list[dict[str, Any]]) -> None:
    stubber.add_response(
        "list_service_deployments",
        {"serviceDeployments": found},
        {"cluster": "modeldeck", "service": SERVICE, "maxResults": 20, "status": ACTIVE},
    )


def expect_listed(stubber: Stubber, found: list[dict[str, Any]]) -> None:
    stubber.add_response(
        "list_service_deployments",
        {"serviceDeployments": found},
        {"cluster": "modeldeck", "service": SERVICE, "maxResults": 20},
    )


def deployment(
    status: str,
    *,
    stage: str = "",
    new_traffic: float | None = None,
    breaker: str = "MONITORING",
    alarms: str = "MONITORING",
    triggered: tuple[str, ...] = (),
    rollback: dict[str, Any] | None = None,
    reason: str = "",
    strategy: str = "CANARY",
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "arn": REVISION_NEW,
        "requestedTaskCount": 2,
        "runningTaskCount": 1,
        "pendingTaskCount": 1,
    }
    source: dict[str, Any] = {
        "arn": REVISION_OLD,
        "requestedTaskCount": 2,
        "runningTaskCount": 2,
        "pendingTaskCount": 0,
    }
    if new_traffic is not None:
        target["requestedProductionTrafficWeight"] = new_traffic
        source["requestedProductionTrafficWeight"] = 100.0 - new_traffic
    raw: dict[str, Any] = {
        "serviceDeploymentArn": DEPLOYMENT,
        "serviceArn": SERVICE,
        "clusterArn": f"{PREFIX}:cluster/modeldeck",
        "createdAt": NOW,
        "startedAt": NOW,
        "updatedAt": NOW + dt.timedelta(minutes=1),
        "sourceServiceRevisions": [source],
        "targetServiceRevision": target,
        "status": status,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "alarms": {"alarmNames": ["iris-staging-5xx"], "rollback": True, "enable": True},
            "strategy": strategy,
            "bakeTimeInMinutes": 3,
            "canaryConfiguration": {"canaryPercent": 5.0, "canaryBakeTimeInMinutes": 3},
        },
        "deploymentCircuitBreaker": {"status": breaker, "failureCount": 0, "threshold": 3},
        "alarms": {
            "status": alarms,
            "alarmNames": ["iris-staging-5xx"],
            "triggeredAlarmNames": list(triggered),
        },
    }
    if stage:
        raw["lifecycleStage"] = stage
    if reason:
        raw["statusReason"] = reason
    if rollback is not None:
        raw["rollback"] = rollback
    if status in {"SUCCESSFUL", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"}:
        raw["finishedAt"] = NOW + dt.timedelta(minutes=9)
    if status == "STOPPED":
        raw["stoppedAt"] = NOW + dt.timedelta(minutes=2)
    return raw


def expect_described(stubber: Stubber, raw: dict[str, Any]) -> None:
    stubber.add_response(
        "describe_service_deployments",
        {"serviceDeployments": [raw], "failures": []},
        {"serviceDeploymentArns": [DEPLOYMENT]},
    )


def model_enum(shape: str) -> list[str]:
    return list(client("ecs").meta.service_model.shape_for(shape).enum)


# --- Express Mode ---------------------------------------------------------------------------


def test_express_describe_reports_the_newest_configuration_and_whether_it_is_busy(
    ecs: Stubber,
) -> None:
    ecs.add_response(
        "describe_express_gateway_service",
        express(
            (REVISION_OLD, container(), NOW - dt.timedelta(days=1)),
            (REVISION_NEW, container("/models/iris/staging:7"), NOW),
        ),
        {"serviceArn": SERVICE},
    )
    expect_active(ecs, [brief()])
    revision = EcsExpressTarget(service_arn=SERVICE).describe()
    assert revision.pin == "/models/iris/staging:7" and revision.busy
    assert revision.url == "https://is-abc.ecs.us-east-1.on.aws"  # the public ingress path
    ecs.assert_no_pending_responses()


def test_express_start_changes_only_the_pin_and_returns_the_service_deployment(
    ecs: Stubber,
) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_express_gateway_service",
        express((REVISION_OLD, container(), NOW)),
        {"serviceArn": SERVICE},
    )
    pinned = container("/models/iris/staging:7")
    ecs.add_response(
        "update_express_gateway_service",
        {
            "service": {
                "serviceArn": SERVICE,
                "cluster": "modeldeck",
                "serviceName": "iris-staging",
                "status": {"statusCode": "ACTIVE"},
                "targetConfiguration": {
                    "serviceRevisionArn": REVISION_NEW,
                    "primaryContainer": pinned,
                    "healthCheckPath": "/readyz",
                },
            }
        },
        {"serviceArn": SERVICE, "primaryContainer": pinned},
    )
    expect_listed(ecs, [brief("PENDING"), brief("SUCCESSFUL", arn=EARLIER_DEPLOYMENT)])
    target = EcsExpressTarget(service_arn=SERVICE)
    assert target.start(pin="/models/iris/staging:7") == DEPLOYMENT
    ecs.assert_no_pending_responses()


def test_express_start_before_ecs_lists_the_deployment_follows_the_revision(
    ecs: Stubber,
) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_express_gateway_service",
        express((REVISION_OLD, container(), NOW)),
        {"serviceArn": SERVICE},
    )
    ecs.add_response(
        "update_express_gateway_service",
        {
            "service": {
                "serviceArn": SERVICE,
                "targetConfiguration": {"serviceRevisionArn": REVISION_NEW},
            }
        },
        {"serviceArn": SERVICE, "primaryContainer": ANY},
    )
    expect_listed(ecs, [brief("SUCCESSFUL", arn=EARLIER_DEPLOYMENT, revision=REVISION_OLD)])
    target = EcsExpressTarget(service_arn=SERVICE)
    assert target.start(pin="/models/iris/staging:7") == REVISION_NEW
    # Polled while ECS has not listed it: a new revision is pending ...
    expect_listed(ecs, [])
    ecs.add_response(
        "describe_service_revisions",
        {
            "serviceRevisions": [
                {
                    "serviceRevisionArn": REVISION_NEW,
                    "serviceArn": SERVICE,
                    "taskDefinition": TD_NEW,
                    "createdAt": timezone.now(),
                }
            ],
            "failures": [],
        },
        {"serviceRevisionArns": [REVISION_NEW]},
    )
    state = target.poll(operation_id=REVISION_NEW)
    assert state is not None and (state.phase, state.status) == (Phase.RUNNING, "PENDING")
    # ... once listed, it is followed through its deployment.
    expect_listed(ecs, [brief("IN_PROGRESS")])
    expect_described(ecs, deployment("IN_PROGRESS", stage="SCALE_UP"))
    state = target.poll(operation_id=REVISION_NEW)
    assert state is not None and state.detail["stage"] == "SCALE_UP"
    # An old revision that never got a deployment is unknown.
    expect_listed(ecs, [])
    ecs.add_response(
        "describe_service_revisions",
        {
            "serviceRevisions": [
                {
                    "serviceRevisionArn": REVISION_NEW,
                    "taskDefinition": TD_NEW,
                    "createdAt": timezone.now() - dt.timedelta(hours=1),
                }
            ]
        },
        {"serviceRevisionArns": [REVISION_NEW]},
    )
    assert target.poll(operation_id=REVISION_NEW) is None
    ecs.assert_no_pending_responses()


def test_express_start_while_a_deployment_runs_is_not_even_sent(ecs: Stubber) -> None:
    expect_active(ecs, [brief("ROLLBACK_IN_PROGRESS")])
    with pytest.raises(TargetBusy):
        EcsExpressTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("ClientException", "The service has an update in progress.", 400, TargetBusy),
        ("InvalidParameterException", "cpu must be one of 256, 512", 400, TargetError),
        ("ServiceNotActiveException", "Service was not ACTIVE.", 400, TargetError),
        ("ServiceNotFoundException", "Service not found.", 400, TargetError),
        ("AccessDeniedException", "not authorized to perform ecs:Update...", 400, TargetError),
        ("UnsupportedFeatureException", "not available in this Region", 400, TargetError),
        ("ServerException", "Internal error", 500, AwsTransientError),
    ],
)
def test_express_update_refusals(
    ecs: Stubber, code: str, message: str, status: int, expected: type[Exception]
) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_express_gateway_service",
        express((REVISION_OLD, container(), NOW)),
        {"serviceArn": SERVICE},
    )
    # (Stubber answers before botocore's retry handler: one answer, one attempt.)
    ecs.add_client_error("update_express_gateway_service", code, message, status)
    with pytest.raises(expected):
        EcsExpressTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("primary", "needle"),
    [
        ({**container(), "environment": [{"name": "X", "value": "1"}]}, "no MODEL_SSM_PARAMETER"),
        (
            {
                **container(),
                "secrets": [
                    {
                        "name": "MODEL_POINTER",
                        "valueFrom": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/models/iris",
                    }
                ],
            },
            "MODEL_POINTER",
        ),
    ],
)
def test_an_express_service_that_cannot_be_pinned_is_refused(
    ecs: Stubber, primary: dict[str, Any], needle: str
) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_express_gateway_service",
        express((REVISION_OLD, primary, NOW)),
        {"serviceArn": SERVICE},
    )
    with pytest.raises(TargetError, match=needle):
        EcsExpressTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()  # nothing was sent


def test_an_unknown_express_service_is_a_target_error(ecs: Stubber) -> None:
    ecs.add_client_error(
        "describe_express_gateway_service", "ResourceNotFoundException", "not found", 400
    )
    with pytest.raises(TargetError, match="does not exist"):
        EcsExpressTarget(service_arn=SERVICE).describe()


def test_a_short_service_arn_without_its_cluster_is_refused() -> None:
    with pytest.raises(TargetError, match="cluster"):
        EcsExpressTarget(service_arn=f"{PREFIX}:service/iris-staging")


# --- classic services ---------------------------------------------------------------------------


def classic_service(controller: str = "ECS", task_definition: str = TD_OLD) -> dict[str, Any]:
    return {
        "services": [
            {
                "serviceArn": SERVICE,
                "serviceName": "iris-staging",
                "clusterArn": f"{PREFIX}:cluster/modeldeck",
                "status": "ACTIVE",
                "desiredCount": 2,
                "runningCount": 2,
                "taskDefinition": task_definition,
                "deploymentController": {"type": controller},
                "currentServiceDeployment": EARLIER_DEPLOYMENT,
                "deploymentConfiguration": {
                    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                    "strategy": "ROLLING",
                },
            }
        ],
        "failures": [],
    }


# What RegisterTaskDefinition takes, and what DescribeTaskDefinition adds.
REGISTRATION: dict[str, Any] = {
    "family": "iris-staging",
    "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/modeldeck/inference/task",
    "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/modeldeck/inference/exec",
    "networkMode": "awsvpc",
    "containerDefinitions": [
        {
            "name": "inference",
            "image": IMAGE,
            "essential": True,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            "environment": [
                {"name": "MODEL_CACHE_DIR", "value": "/tmp/models"},
                {"name": "MODEL_SSM_PARAMETER", "value": "/models/iris/staging:6"},
            ],
            "secrets": [
                {
                    "name": "INFERENCE_API_KEYS",
                    "valueFrom": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:keys",
                }
            ],
            "readonlyRootFilesystem": True,
        },
        {"name": "log-router", "image": "public.ecr.aws/aws-observability/fluent-bit:2"},
    ],
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "1024",
    "memory": "2048",
    "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
}
DESCRIBED = {
    **REGISTRATION,
    "taskDefinitionArn": TD_OLD,
    "revision": 6,
    "status": "ACTIVE",
    "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.task-iam-role"}],
    "compatibilities": ["EC2", "FARGATE"],
    "registeredAt": NOW - dt.timedelta(days=1),
    "registeredBy": f"arn:aws:iam::{ACCOUNT}:role/deployer",
}


def test_classic_describe_reads_the_pin_from_the_service_task_definition(ecs: Stubber) -> None:
    ecs.add_response(
        "describe_services",
        classic_service(),
        {"cluster": "modeldeck", "services": [SERVICE]},
    )
    ecs.add_response(
        "describe_task_definition", {"taskDefinition": DESCRIBED}, {"taskDefinition": TD_OLD}
    )
    expect_active(ecs, [])
    revision = EcsServiceTarget(service_arn=SERVICE).describe()
    assert (revision.pin, revision.busy, revision.url) == ("/models/iris/staging:6", False, "")
    ecs.assert_no_pending_responses()


def test_classic_start_registers_a_pinned_copy_and_updates_the_service(ecs: Stubber) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_services", classic_service(), {"cluster": "modeldeck", "services": [SERVICE]}
    )
    ecs.add_response(
        "describe_task_definition", {"taskDefinition": DESCRIBED}, {"taskDefinition": TD_OLD}
    )
    pinned = {
        **REGISTRATION,
        "containerDefinitions": [
            {
                **REGISTRATION["containerDefinitions"][0],
                "environment": [
                    {"name": "MODEL_CACHE_DIR", "value": "/tmp/models"},
                    {"name": "MODEL_SSM_PARAMETER", "value": "/models/iris/staging:7"},
                ],
            },
            REGISTRATION["containerDefinitions"][1],
        ],
    }
    # Only what RegisterTaskDefinition accepts, everything else as it was.
    ecs.add_response(
        "register_task_definition",
        {"taskDefinition": {**pinned, "taskDefinitionArn": TD_NEW, "revision": 7}},
        pinned,
    )
    ecs.add_response(
        "update_service",
        {"service": {**classic_service()["services"][0], "currentServiceDeployment": DEPLOYMENT}},
        {"cluster": "modeldeck", "service": SERVICE, "taskDefinition": TD_NEW},
    )
    assert EcsServiceTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7") == DEPLOYMENT
    ecs.assert_no_pending_responses()


def test_classic_start_without_a_named_deployment_follows_the_task_definition(
    ecs: Stubber,
) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_services", classic_service(), {"cluster": "modeldeck", "services": [SERVICE]}
    )
    ecs.add_response(
        "describe_task_definition", {"taskDefinition": DESCRIBED}, {"taskDefinition": TD_OLD}
    )
    ecs.add_response(
        "register_task_definition", {"taskDefinition": {"taskDefinitionArn": TD_NEW}}, None
    )
    answer = classic_service()["services"][0]
    del answer["currentServiceDeployment"]
    ecs.add_response("update_service", {"service": answer}, None)
    target = EcsServiceTarget(service_arn=SERVICE)
    assert target.start(pin="/models/iris/staging:7") == TD_NEW
    # Following it: the deployment whose target revision runs that task definition.
    expect_listed(
        ecs,
        [brief("IN_PROGRESS"), brief("SUCCESSFUL", arn=EARLIER_DEPLOYMENT, revision=REVISION_OLD)],
    )
    ecs.add_response(
        "describe_service_revisions",
        {
            "serviceRevisions": [
                {"serviceRevisionArn": REVISION_NEW, "taskDefinition": TD_NEW},
                {"serviceRevisionArn": REVISION_OLD, "taskDefinition": TD_OLD},
            ],
            "failures": [],
        },
        {"serviceRevisionArns": [REVISION_NEW, REVISION_OLD]},
    )
    expect_described(ecs, deployment("IN_PROGRESS", stage="SCALE_UP", strategy="ROLLING"))
    state = target.poll(operation_id=TD_NEW)
    assert state is not None and state.phase == Phase.RUNNING
    assert state.detail["strategy"] == "ROLLING"
    ecs.assert_no_pending_responses()


def test_classic_service_deployed_by_codedeploy_is_refused(ecs: Stubber) -> None:
    expect_active(ecs, [])
    ecs.add_response(
        "describe_services",
        classic_service("CODE_DEPLOY"),
        {"cluster": "modeldeck", "services": [SERVICE]},
    )
    with pytest.raises(TargetError, match="CODE_DEPLOY"):
        EcsServiceTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()


def test_classic_task_definition_without_the_variable_is_refused(ecs: Stubber) -> None:
    expect_active(ecs, [])
    ecs.add_response("describe_services", classic_service(), None)
    unpinned = {
        **DESCRIBED,
        "containerDefinitions": [{"name": "inference", "image": IMAGE, "environment": []}],
    }
    ecs.add_response("describe_task_definition", {"taskDefinition": unpinned}, None)
    with pytest.raises(TargetError, match="does not read the pointer"):
        EcsServiceTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()


def test_classic_missing_service_is_a_target_error(ecs: Stubber) -> None:
    ecs.add_response(
        "describe_services",
        {"services": [], "failures": [{"arn": SERVICE, "reason": "MISSING"}]},
        {"cluster": "modeldeck", "services": [SERVICE]},
    )
    with pytest.raises(TargetError, match="does not exist"):
        EcsServiceTarget(service_arn=SERVICE).describe()


def test_classic_register_refused_is_a_target_error(ecs: Stubber) -> None:
    expect_active(ecs, [])
    ecs.add_response("describe_services", classic_service(), None)
    ecs.add_response("describe_task_definition", {"taskDefinition": DESCRIBED}, None)
    ecs.add_client_error(
        "register_task_definition", "ClientException", "Too many revisions of this family", 400
    )
    with pytest.raises(TargetError, match="new task definition"):
        EcsServiceTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")


# --- following a service deployment (both kinds) ----------------------------------------------


def test_every_service_deployment_status_of_the_model_has_a_phase() -> None:
    statuses = set(model_enum("ServiceDeploymentStatus"))
    assert statuses <= set(PHASES)
    # The one extra: STOP_IN_PROGRESS, named by ECS's guide, not by the model.
    assert set(PHASES) - statuses == {"STOP_IN_PROGRESS"}


def test_every_lifecycle_stage_of_the_model_has_a_label() -> None:
    assert set(model_enum("ServiceDeploymentLifecycleStage")) == set(STAGES)


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("PENDING", Phase.RUNNING),
        ("IN_PROGRESS", Phase.RUNNING),
        ("STOP_REQUESTED", Phase.RUNNING),
        ("STOP_IN_PROGRESS", Phase.RUNNING),
        ("ROLLBACK_REQUESTED", Phase.RUNNING),
        ("ROLLBACK_IN_PROGRESS", Phase.RUNNING),
        ("SUCCESSFUL", Phase.SUCCEEDED),
        ("ROLLBACK_SUCCESSFUL", Phase.ROLLED_BACK),
        ("ROLLBACK_FAILED", Phase.FAILED),
        ("STOPPED", Phase.FAILED),
    ],
)
@pytest.mark.parametrize("kind", [EcsExpressTarget, EcsServiceTarget])
def test_every_status_maps_onto_the_interface(
    ecs: Stubber, kind: type[EcsExpressTarget], status: str, phase: Phase
) -> None:
    expect_described(ecs, deployment(status))
    state = kind(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None and (state.phase, state.status) == (phase, status)
    assert state.started_at == NOW
    if phase == Phase.RUNNING:
        assert state.ended_at is None
    else:
        assert state.ended_at is not None and state.ended_at > NOW


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_lifecycle_stage_is_reported_while_running(ecs: Stubber, stage: str) -> None:
    expect_described(ecs, deployment("IN_PROGRESS", stage=stage))
    state = EcsExpressTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None and state.phase == Phase.RUNNING
    assert state.detail["stage"] == stage and state.detail["stage_label"] == STAGES[stage]


def test_the_canary_traffic_weights_are_reported(ecs: Stubber) -> None:
    expect_described(
        ecs, deployment("IN_PROGRESS", stage="PRODUCTION_TRAFFIC_SHIFT", new_traffic=5.0)
    )
    state = EcsExpressTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None
    assert state.detail["traffic_new"] == 5.0 and state.detail["traffic_old"] == 95.0
    assert state.detail["tasks_new"] == "1/2" and state.detail["strategy"] == "CANARY"
    assert "reason" not in state.detail


def test_a_circuit_breaker_rollback_is_rolled_back_with_its_reason(ecs: Stubber) -> None:
    expect_described(
        ecs,
        deployment(
            "ROLLBACK_SUCCESSFUL",
            breaker="TRIGGERED",
            rollback={
                "reason": "Service deployment rolled back because the circuit breaker "
                "threshold was exceeded.",
                "startedAt": NOW + dt.timedelta(minutes=4),
                "serviceRevisionArn": REVISION_OLD,
            },
        ),
    )
    state = EcsServiceTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None and state.phase == Phase.ROLLED_BACK
    assert "circuit breaker tripped" in state.detail["reason"]
    assert "threshold was exceeded" in state.detail["reason"]


def test_an_alarm_rollback_names_the_alarm(ecs: Stubber) -> None:
    expect_described(
        ecs,
        deployment(
            "ROLLBACK_SUCCESSFUL",
            stage="BAKE_TIME",
            alarms="TRIGGERED",
            triggered=("iris-staging-5xx",),
            rollback={"reason": "Alarm(s) triggered", "serviceRevisionArn": REVISION_OLD},
        ),
    )
    state = EcsExpressTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None and state.phase == Phase.ROLLED_BACK
    assert "iris-staging-5xx went into ALARM" in state.detail["reason"]


def test_a_stopped_deployment_fails_with_ecs_reason(ecs: Stubber) -> None:
    expect_described(
        ecs, deployment("STOPPED", breaker="TRIGGERED", reason="tasks failed to start")
    )
    state = EcsServiceTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT)
    assert state is not None and state.phase == Phase.FAILED
    assert state.detail["reason"] == "the deployment circuit breaker tripped; tasks failed to start"


def test_a_deployment_ecs_no_longer_knows_is_none(ecs: Stubber) -> None:
    ecs.add_response(
        "describe_service_deployments",
        {"serviceDeployments": [], "failures": [{"arn": DEPLOYMENT, "reason": "MISSING"}]},
        {"serviceDeploymentArns": [DEPLOYMENT]},
    )
    assert EcsExpressTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT) is None
    ecs.add_client_error(
        "describe_service_deployments", "ServiceDeploymentNotFoundException", "gone", 400
    )
    assert EcsExpressTarget(service_arn=SERVICE).poll(operation_id=DEPLOYMENT) is None


def test_stop_asks_ecs_to_roll_back(ecs: Stubber) -> None:
    ecs.add_response(
        "stop_service_deployment",
        {"serviceDeploymentArn": DEPLOYMENT},
        {"serviceDeploymentArn": DEPLOYMENT, "stopType": "ROLLBACK"},
    )
    assert EcsServiceTarget(service_arn=SERVICE).stop(operation_id=DEPLOYMENT) is True
    # A deployment that has ended cannot be stopped: the reconciler follows it to its end.
    ecs.add_client_error(
        "stop_service_deployment", "ConflictException", "deployment is not in progress", 409
    )
    assert EcsServiceTarget(service_arn=SERVICE).stop(operation_id=DEPLOYMENT) is False
    ecs.assert_no_pending_responses()


def test_find_started_adopts_a_deployment_created_since_the_mark(ecs: Stubber) -> None:
    since = NOW - dt.timedelta(seconds=30)
    ecs.add_response(
        "list_service_deployments",
        {"serviceDeployments": [brief("IN_PROGRESS")]},
        {
            "cluster": "modeldeck",
            "service": SERVICE,
            "maxResults": 20,
            "createdAt": {"after": since},
        },
    )
    assert EcsExpressTarget(service_arn=SERVICE).find_started(since=since) == DEPLOYMENT
    # Older ones do not count, even if an answer lists them.
    ecs.add_response(
        "list_service_deployments",
        {"serviceDeployments": [brief("SUCCESSFUL", created=NOW - dt.timedelta(hours=1))]},
        None,
    )
    assert EcsExpressTarget(service_arn=SERVICE).find_started(since=since) is None


def test_target_for_picks_the_environment_kind(db: Any) -> None:
    from dashboard.deployments.models import Environment
    from dashboard.deployments.targets import target_for

    environment = Environment(
        model_name="iris",
        name="staging",
        ssm_parameter="/models/iris/staging",
        service_arn=SERVICE,
        target=Environment.Target.ECS_EXPRESS,
    )
    assert isinstance(target_for(environment), EcsExpressTarget)
    environment.target = Environment.Target.ECS
    assert isinstance(target_for(environment), EcsServiceTarget)


@pytest.mark.parametrize(
    ("code", "message", "status", "expected"),
    [
        ("ClientException", "The service is currently being updated.", 400, TargetBusy),
        ("ServiceNotActiveException", "Service was not ACTIVE.", 400, TargetError),
        ("PlatformTaskDefinitionIncompatibilityException", "not compatible", 400, TargetError),
        ("InvalidParameterException", "TaskDefinition is inactive", 400, TargetError),
        ("ThrottlingException", "Rate exceeded", 400, AwsTransientError),
    ],
)
def test_classic_update_service_refusals(
    ecs: Stubber, code: str, message: str, status: int, expected: type[Exception]
) -> None:
    expect_active(ecs, [])
    ecs.add_response("describe_services", classic_service(), None)
    ecs.add_response("describe_task_definition", {"taskDefinition": DESCRIBED}, None)
    ecs.add_response(
        "register_task_definition", {"taskDefinition": {"taskDefinitionArn": TD_NEW}}, None
    )
    ecs.add_client_error("update_service", code, message, status)
    with pytest.raises(expected):
        EcsServiceTarget(service_arn=SERVICE).start(pin="/models/iris/staging:7")
    ecs.assert_no_pending_responses()
