"""The deployment state machine driving the ECS target, step by step: a whole
Express Mode canary rollout, a classic service's circuit-breaker rollback,
and a person's rollback (StopServiceDeployment) while a canary runs.

ECS is botocore's Stubber on the dashboard's own ECS client (every answer
checked against the pinned service model, and every request where the test
names it); SSM and S3 are the embedded AWS; the service's /version is a small
HTTP server that serves what the test says the live revision runs. Each
``step`` is one reconciler step (``deployment_advance(max_steps=1)``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from django.utils import timezone

from dashboard.aws import ssm
from dashboard.aws.clients import client
from dashboard.deployments.models import Deployment, Environment, PointerWrite
from dashboard.deployments.reconciler import deployment_advance
from dashboard.deployments.services import deployment_abort, deployment_start
from dashboard.deployments.targets.ecs import STAGES
from tests.conftest import publish
from tests.dashboard.test_aws_contract_ecs import (
    DEPLOYMENT,
    DESCRIBED,
    NOW,
    REVISION_NEW,
    REVISION_OLD,
    SERVICE,
    TD_NEW,
    TD_OLD,
    brief,
    classic_service,
    container,
    expect_active,
    expect_described,
    expect_listed,
    express,
)
from tests.dashboard.test_aws_contract_ecs import deployment as service_deployment

PARAMETER = "/models/iris/staging"


class FakeService:
    """Answers /version with what ``serve`` last set (the live revision)."""

    def __init__(self) -> None:
        self.pointer: dict[str, Any] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps(
                    {
                        "model": fake.pointer.get("model"),
                        "version": fake.pointer.get("version"),
                        "sha256": fake.pointer.get("sha256"),
                    }
                ).encode()
                self.send_response(200 if self.path == "/version" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, pointer: dict[str, Any]) -> None:
        self.pointer = dict(pointer)


@pytest.fixture
def ecs_stack(aws: str, db: Any, tmp_path: Path, settings: Any) -> Iterator[dict[str, Any]]:
    """iris 1.0 and 1.1 in the embedded AWS, the pointer (SSM version 1) naming
    1.0, the service serving 1.0, and a stubbed ECS client."""
    from dashboard.deployments.pointer import pointer_build, pointer_dumps
    from dashboard.registry.selectors import version_get

    pointers = {}
    for version in ("1.0", "1.1"):
        publish("iris", version, tmp_path)
        info = version_get(model="iris", version=version)
        assert info is not None
        pointers[version] = pointer_build(
            info=info, bucket="test-models", promoted_by="t", reason="", now=timezone.now()
        )
    assert ssm.put_parameter(name=PARAMETER, value=pointer_dumps(pointers["1.0"])) == 1
    settings.DEPLOYMENT_POLL_SECONDS = 0
    settings.DEPLOYMENT_VERIFY_POLL_SECONDS = 0
    settings.DEPLOYMENT_VERIFY_SECONDS = 5.0
    settings.DEPLOYMENT_RETRY_MAX_SECONDS = 0
    settings.ENVIRONMENT_STATE_CACHE_SECONDS = 0
    service = FakeService()
    service.serve(pointers["1.0"])
    service.thread.start()
    stubber = Stubber(client("ecs"))
    stubber.activate()
    try:
        yield {"pointers": pointers, "service": service, "ecs": stubber}
    finally:
        stubber.deactivate()
        service.server.shutdown()
        service.server.server_close()


def environment(stack: dict[str, Any], target: str) -> Environment:
    from dashboard.deployments.services import environment_ensure

    return environment_ensure(
        model="iris",
        name="staging",
        ssm_parameter=PARAMETER,
        service_arn=SERVICE,
        service_url=stack["service"].url,
        target=target,
    )


def request(env: Environment, user: Any, capture: Any) -> Deployment:
    with capture(execute=False):
        return deployment_start(environment=env, version="1.1", user=user, reason="test")


def step(deployment: Deployment) -> Deployment:
    """One reconciler step; a step that failed (an unexpected call) shows."""
    deployment_advance(deployment_id=deployment.pk, max_steps=1)
    deployment.refresh_from_db()
    assert deployment.attempts == 0, [e.message for e in deployment.events.all()]
    return deployment


def follow(stack: dict[str, Any], deployment: Deployment, raw: dict[str, Any]) -> Deployment:
    expect_described(stack["ecs"], raw)
    deployment = step(deployment)
    stack["ecs"].assert_no_pending_responses()
    return deployment


def pointer_now() -> dict[str, Any]:
    return dict(json.loads(ssm.get_parameter(name=PARAMETER) or "{}"))


def messages(deployment: Deployment) -> list[str]:
    return [e.message for e in deployment.events.all()]


def start_express(stack: dict[str, Any], deployment: Deployment) -> Deployment:
    """write_pointer, then start: the update pins SSM version 2."""
    ecs = stack["ecs"]
    deployment = step(deployment)
    assert deployment.step == "start" and deployment.parameter_version == 2
    running = express((REVISION_OLD, container(f"{PARAMETER}:1"), NOW))
    ecs.add_response("describe_express_gateway_service", running, {"serviceArn": SERVICE})
    expect_active(ecs, [])  # describe: not busy
    expect_active(ecs, [])  # start: checks again right before asking
    ecs.add_response("describe_express_gateway_service", running, {"serviceArn": SERVICE})
    ecs.add_response(
        "update_express_gateway_service",
        {
            "service": {
                "serviceArn": SERVICE,
                "targetConfiguration": {"serviceRevisionArn": REVISION_NEW},
            }
        },
        {"serviceArn": SERVICE, "primaryContainer": container(f"{PARAMETER}:2")},
    )
    expect_listed(ecs, [brief("PENDING")])
    deployment = step(deployment)
    ecs.assert_no_pending_responses()
    assert deployment.step == "follow" and deployment.operation_id == DEPLOYMENT
    assert deployment.previous_pin == f"{PARAMETER}:1" and deployment.from_version == "1.0"
    return deployment


CANARY = [
    ("PENDING", "", None),
    ("IN_PROGRESS", "PRE_SCALE_UP", None),
    ("IN_PROGRESS", "SCALE_UP", 0.0),
    ("IN_PROGRESS", "POST_SCALE_UP", 0.0),
    ("IN_PROGRESS", "TEST_TRAFFIC_SHIFT", 0.0),
    ("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT", 0.0),
    ("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", 5.0),
]


def test_an_express_canary_rollout_goes_live_stage_by_stage(
    ecs_stack: dict[str, Any], personas: Any, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    env = environment(ecs_stack, Environment.Target.ECS_EXPRESS)
    deployment = start_express(
        ecs_stack, request(env, personas["deployer"], django_capture_on_commit_callbacks)
    )
    for status, stage, traffic in CANARY:
        deployment = follow(
            ecs_stack, deployment, service_deployment(status, stage=stage, new_traffic=traffic)
        )
        assert deployment.status == "in_progress" and deployment.operation_status == status
    # The canary's progress is on the deployment page.
    assert deployment.operation_detail["traffic_new"] == 5.0
    client.force_login(personas["viewer"])
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "new revision 5% of traffic, previous 95%" in page
    assert STAGES["PRODUCTION_TRAFFIC_SHIFT"] in page
    # The canary baked; all traffic moves to the new revision.
    ecs_stack["service"].serve(ecs_stack["pointers"]["1.1"])
    for status, stage in [
        ("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT"),
        ("IN_PROGRESS", "POST_PRODUCTION_TRAFFIC_SHIFT"),
        ("IN_PROGRESS", "BAKE_TIME"),
        ("IN_PROGRESS", "CLEAN_UP"),
    ]:
        deployment = follow(
            ecs_stack, deployment, service_deployment(status, stage=stage, new_traffic=100.0)
        )
        assert deployment.status == "in_progress"
    deployment = follow(ecs_stack, deployment, service_deployment("SUCCESSFUL", new_traffic=100.0))
    assert deployment.status == "verifying" and deployment.live_at is not None
    deployment = step(deployment)  # /version reports 1.1's SHA-256
    assert deployment.status == "succeeded", deployment.error
    assert deployment.live_sha256 == deployment.sha256
    assert pointer_now()["version"] == "1.1"
    text = messages(deployment)
    labels = [STAGES[s] for s in STAGES if s not in {"RECONCILE_SERVICE"}]
    logged = [m.split(": ", 1)[1] for m in text if m.startswith("ECS Express Mode: ")]
    assert logged == labels  # each stage once, in ECS's order
    env.refresh_from_db()
    assert env.promoted_version == "1.1"


def test_a_circuit_breaker_rollback_of_a_classic_service_ends_rolled_back(
    ecs_stack: dict[str, Any], personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ecs = ecs_stack["ecs"]
    env = environment(ecs_stack, Environment.Target.ECS)
    deployment = step(request(env, personas["deployer"], django_capture_on_commit_callbacks))
    assert deployment.parameter_version == 2
    running = {
        **DESCRIBED,
        "containerDefinitions": [
            {
                **DESCRIBED["containerDefinitions"][0],
                "environment": [{"name": "MODEL_SSM_PARAMETER", "value": f"{PARAMETER}:1"}],
            }
        ],
    }
    # start: what runs (service, task definition, not busy), then the pinned copy.
    ecs.add_response(
        "describe_services", classic_service(), {"cluster": "modeldeck", "services": [SERVICE]}
    )
    ecs.add_response(
        "describe_task_definition", {"taskDefinition": running}, {"taskDefinition": TD_OLD}
    )
    expect_active(ecs, [])
    expect_active(ecs, [])
    ecs.add_response(
        "describe_services", classic_service(), {"cluster": "modeldeck", "services": [SERVICE]}
    )
    ecs.add_response(
        "describe_task_definition", {"taskDefinition": running}, {"taskDefinition": TD_OLD}
    )
    registration = {
        k: v
        for k, v in running.items()
        if k
        not in {
            "taskDefinitionArn",
            "revision",
            "status",
            "requiresAttributes",
            "compatibilities",
            "registeredAt",
            "registeredBy",
        }
    }
    registration["containerDefinitions"] = [
        {
            **running["containerDefinitions"][0],
            "environment": [{"name": "MODEL_SSM_PARAMETER", "value": f"{PARAMETER}:2"}],
        }
    ]
    ecs.add_response(
        "register_task_definition", {"taskDefinition": {"taskDefinitionArn": TD_NEW}}, registration
    )
    ecs.add_response(
        "update_service",
        {
            "service": {
                **classic_service(task_definition=TD_NEW)["services"][0],
                "currentServiceDeployment": DEPLOYMENT,
            }
        },
        {"cluster": "modeldeck", "service": SERVICE, "taskDefinition": TD_NEW},
    )
    deployment = step(deployment)
    ecs.assert_no_pending_responses()
    assert deployment.step == "follow" and deployment.operation_id == DEPLOYMENT
    # The new tasks keep failing: the circuit breaker trips and ECS rolls back.
    for raw in [
        service_deployment("IN_PROGRESS", stage="SCALE_UP", strategy="ROLLING"),
        service_deployment("ROLLBACK_REQUESTED", breaker="TRIGGERED", strategy="ROLLING"),
        service_deployment("ROLLBACK_IN_PROGRESS", breaker="TRIGGERED", strategy="ROLLING"),
    ]:
        deployment = follow(ecs_stack, deployment, raw)
        assert deployment.status == "in_progress" and not deployment.outcome
    rollback = {
        "reason": "circuit breaker: 3 tasks failed to start",
        "startedAt": NOW,
        "serviceRevisionArn": REVISION_OLD,
    }
    deployment = follow(
        ecs_stack,
        deployment,
        service_deployment(
            "ROLLBACK_SUCCESSFUL", breaker="TRIGGERED", rollback=rollback, strategy="ROLLING"
        ),
    )
    assert deployment.outcome == "rolled_back" and deployment.step == "restore"
    assert "circuit breaker tripped" in deployment.error and "3 tasks failed" in deployment.error
    # restore: the service serves 1.0 again, so the pointer goes back to it.
    deployment = step(deployment)
    assert deployment.status == "rolled_back"
    assert pointer_now()["version"] == "1.0"
    assert PointerWrite.objects.filter(deployment=deployment, purpose="restore").exists()
    env.refresh_from_db()
    assert env.promoted_version != "1.1"


def test_a_person_rolls_back_a_running_canary_through_stop_service_deployment(
    ecs_stack: dict[str, Any], personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ecs = ecs_stack["ecs"]
    env = environment(ecs_stack, Environment.Target.ECS_EXPRESS)
    deployment = start_express(
        ecs_stack, request(env, personas["deployer"], django_capture_on_commit_callbacks)
    )
    deployment = follow(
        ecs_stack,
        deployment,
        service_deployment("IN_PROGRESS", stage="PRODUCTION_TRAFFIC_SHIFT", new_traffic=5.0),
    )
    with django_capture_on_commit_callbacks(execute=False):
        deployment_abort(
            deployment_id=deployment.pk, user=personas["deployer"], reason="p99 doubled on canary"
        )
    ecs.add_response(
        "stop_service_deployment",
        {"serviceDeploymentArn": DEPLOYMENT},
        {"serviceDeploymentArn": DEPLOYMENT, "stopType": "ROLLBACK"},
    )
    deployment = step(deployment)
    ecs.assert_no_pending_responses()
    assert deployment.stop_sent_at is not None and deployment.outcome == "rolled_back"
    assert any("asked ECS Express Mode to stop" in m for m in messages(deployment))
    manual = {"reason": "Rollback requested by the user", "serviceRevisionArn": REVISION_OLD}
    for status in ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"):
        deployment = follow(
            ecs_stack,
            deployment,
            service_deployment(status, stage="PRODUCTION_TRAFFIC_SHIFT", rollback=manual),
        )
        assert deployment.status == "in_progress" and deployment.step == "follow"
    deployment = follow(
        ecs_stack, deployment, service_deployment("ROLLBACK_SUCCESSFUL", rollback=manual)
    )
    assert deployment.step == "restore"
    deployment = step(deployment)  # the service serves 1.0: the pointer goes back
    assert deployment.status == "rolled_back"
    assert "aborted by deployer: p99 doubled on canary" in deployment.error
    assert pointer_now()["version"] == "1.0"
    assert not Deployment.objects.filter(undoes=deployment).exists()  # nothing left to undo


def test_a_start_repeated_after_a_crash_adopts_the_service_deployment(
    ecs_stack: dict[str, Any], personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A worker sent UpdateExpressGatewayService and died before recording the
    deployment: the next one finds it and follows it; no second update."""
    ecs = ecs_stack["ecs"]
    env = environment(ecs_stack, Environment.Target.ECS_EXPRESS)
    deployment = step(request(env, personas["deployer"], django_capture_on_commit_callbacks))
    assert deployment.step == "start" and deployment.parameter_version == 2
    Deployment.objects.filter(pk=deployment.pk).update(start_requested_at=timezone.now())
    moving = express(
        (REVISION_OLD, container(f"{PARAMETER}:1"), NOW),
        (REVISION_NEW, container(f"{PARAMETER}:2"), NOW + dt.timedelta(seconds=1)),
    )
    ecs.add_response("describe_express_gateway_service", moving, {"serviceArn": SERVICE})
    expect_active(ecs, [brief("IN_PROGRESS")])
    ecs.add_response(
        "list_service_deployments",
        {"serviceDeployments": [brief("IN_PROGRESS", created=timezone.now())]},
        {"cluster": "modeldeck", "service": SERVICE, "maxResults": 20, "createdAt": ANY},
    )
    deployment = step(deployment)
    ecs.assert_no_pending_responses()  # and no UpdateExpressGatewayService was sent
    assert deployment.step == "follow" and deployment.operation_id == DEPLOYMENT
    assert any("started earlier" in m for m in messages(deployment))
    ecs_stack["service"].serve(ecs_stack["pointers"]["1.1"])
    deployment = follow(ecs_stack, deployment, service_deployment("SUCCESSFUL", new_traffic=100.0))
    deployment = step(deployment)
    assert deployment.status == "succeeded", deployment.error
