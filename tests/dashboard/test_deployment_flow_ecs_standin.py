"""The ECS Express target against the local stand-in's ECS view of its
services (devstack/apprunner/ecs_api.py): real instances, health checks, the
stand-in's own rollback and StopServiceDeployment, through an unmodified boto3
``ecs`` client and the reconciler (as test_deployment_flow.py does for App
Runner)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dashboard.aws import ecs
from dashboard.aws.clients import reset_clients
from dashboard.deployments.models import Deployment, Environment, PointerWrite
from dashboard.deployments.reconciler import deployment_advance
from dashboard.deployments.services import deployment_abort
from devstack.apprunner.service import ecs_service_arn_for
from tests.dashboard.test_deployment_flow import (
    PARAMETER,
    messages,
    pointer_now,
    request,
    run_to_end,
    served,
)

ARN = ecs_service_arn_for(region="us-east-1", account_id="000000000000", name="iris-staging")


@pytest.fixture
def express_stack(
    deploy_stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """deploy_stack's staging environment, driven as an ECS Express service."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", deploy_stack["endpoint"])
    reset_clients()
    environment = deploy_stack["environment"]
    Environment.objects.filter(pk=environment.pk).update(
        target=Environment.Target.ECS_EXPRESS, service_arn=ARN
    )
    environment.refresh_from_db()
    yield deploy_stack
    reset_clients()


def pin_now() -> str | None:
    newest = ecs.describe_express_service(service_arn=ARN).newest()
    return (
        ecs.environment_of(newest.primary_container).get("MODEL_SSM_PARAMETER") if newest else None
    )


def deployments_of() -> list[ecs.DeploymentBrief]:
    return ecs.list_service_deployments(cluster="devstack", service=ARN)


def test_a_promote_goes_live_through_update_express_gateway_service(
    express_stack: dict[str, Any], personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    before = len(deployments_of())
    deployment = request(
        express_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "succeeded", deployment.error
    assert deployment.operation_id.startswith(
        "arn:aws:ecs:us-east-1:000000000000:service-deployment/"
    )
    assert pin_now() == f"{PARAMETER}:{deployment.parameter_version}"
    assert served(express_stack["url"])["sha256"] == deployment.sha256
    listed = deployments_of()
    assert len(listed) == before + 1 and listed[0].arn == deployment.operation_id
    assert listed[0].status == "SUCCESSFUL"
    text = " | ".join(messages(deployment))
    assert "ECS service deployment is SUCCESSFUL" in text and "verified" in text


def test_an_unhealthy_revision_is_rolled_back_by_the_service(
    express_stack: dict[str, Any], personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    pin_before = pin_now()
    deployment = request(
        express_stack, personas["deployer"], "2.0-broken", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back"
    assert "health check" in deployment.error and "circuit breaker" in deployment.error
    assert served(express_stack["url"])["version"] == "1.0"
    assert pin_now() == pin_before
    assert pointer_now()["version"] == "1.0"
    assert PointerWrite.objects.filter(deployment=deployment, purpose="restore").exists()
    found = ecs.describe_service_deployment(deployment_arn=deployment.operation_id)
    assert found is not None and found.status == "ROLLBACK_SUCCESSFUL"


def test_stop_and_roll_back_uses_stop_service_deployment(
    express_stack: dict[str, Any],
    personas: Any,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import publish

    monkeypatch.setenv("FAKE_SLOW_SECONDS", "60")  # the new instance takes a minute to be ready
    publish("iris", "1.2-slow", express_stack["tmp_path"])
    deployment = request(
        express_stack, personas["deployer"], "1.2-slow", django_capture_on_commit_callbacks
    )
    deadline = time.monotonic() + 30
    while deployment.operation_status != "IN_PROGRESS":
        assert time.monotonic() < deadline, messages(deployment)
        deployment_advance(deployment_id=deployment.pk)
        deployment.refresh_from_db()
        time.sleep(0.05)
    with django_capture_on_commit_callbacks(execute=False):
        deployment_abort(deployment_id=deployment.pk, user=personas["deployer"], reason="too slow")
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back", deployment.error
    assert deployment.stop_sent_at is not None
    assert any("asked ECS Express Mode to stop" in m for m in messages(deployment))
    found = ecs.describe_service_deployment(deployment_arn=deployment.operation_id)
    assert found is not None and found.status == "ROLLBACK_SUCCESSFUL"
    assert "StopServiceDeployment" in found.rollback_reason
    assert served(express_stack["url"])["version"] == "1.0"
    assert pointer_now()["version"] == "1.0"
    assert not Deployment.objects.filter(undoes=deployment).exists()
