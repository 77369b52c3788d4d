"""A deployment run to its end against the App Runner stand-in: success,
App Runner's own rollback of an unhealthy version, and resuming after a
worker died mid-deploy."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dashboard.aws import apprunner, ssm
from dashboard.deployments.models import Deployment
from dashboard.deployments.services import (
    DeploymentConflict,
    deployment_execute,
    deployment_rollback,
    deployment_start,
)


def served_version(url: str) -> str:
    return httpx.get(f"{url}/version", timeout=5).json()["version"]


def start(stack: dict[str, Any], user: Any, version: str, capture: Any) -> Deployment:
    with capture(execute=False):
        return deployment_start(
            environment=stack["environment"], version=version, user=user, reason="test"
        )


def test_promote_goes_live(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    assert served_version(deploy_stack["url"]) == "1.0"
    deployment = start(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment_execute(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "succeeded", deployment.error
    assert deployment.live_version == "1.1"
    assert deployment.operation_id and deployment.finished_at and deployment.started_at
    assert served_version(deploy_stack["url"]) == "1.1"
    messages = [e.message for e in deployment.events.all()]
    assert any("SUCCEEDED" in m for m in messages)
    assert any("reports version 1.1" in m for m in messages)


def test_unhealthy_version_is_rolled_back(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = start(
        deploy_stack, personas["deployer"], "2.0-broken", django_capture_on_commit_callbacks
    )
    deployment_execute(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "rolled_back"
    assert "never became healthy" in deployment.error
    assert served_version(deploy_stack["url"]) == "1.0"  # the old instance kept serving
    pointer = json.loads(ssm.get_parameter(name="/models/iris/staging") or "")
    assert pointer["version"] == "1.0"  # and the next cold start serves it too
    operation = apprunner.get_operation(
        service_arn=deploy_stack["arn"], operation_id=deployment.operation_id
    )
    assert operation is not None and operation.status == "ROLLBACK_SUCCEEDED"


def test_execute_is_idempotent_and_resumes(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = start(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    # A worker claimed it and started the operation, then died.
    operation_id = apprunner.start_deployment(service_arn=deploy_stack["arn"])
    Deployment.objects.filter(pk=deployment.pk).update(
        status="in_progress", operation_id=operation_id
    )
    deployment_execute(deployment_id=deployment.pk)  # the redelivered task
    deployment.refresh_from_db()
    assert deployment.status == "succeeded" and deployment.operation_id == operation_id
    assert any("resumed" in e.message for e in deployment.events.all())
    events_before = deployment.events.count()
    deployment_execute(deployment_id=deployment.pk)  # a duplicate delivery does nothing
    assert deployment.events.count() == events_before
    assert served_version(deploy_stack["url"]) == "1.1"


def test_rollback_returns_to_previous_live_version(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    first = start(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks)
    deployment_execute(deployment_id=first.pk)
    with django_capture_on_commit_callbacks(execute=False):
        back = deployment_rollback(
            environment=deploy_stack["environment"], user=personas["deployer"]
        )
    assert (back.kind, back.from_version, back.to_version) == ("rollback", "1.1", "1.0")
    deployment_execute(deployment_id=back.pk)
    back.refresh_from_db()
    assert back.status == "succeeded"
    assert served_version(deploy_stack["url"]) == "1.0"


def test_no_second_deployment_while_one_is_in_flight(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    start(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks)
    with pytest.raises(DeploymentConflict):
        start(deploy_stack, personas["admin"], "1.0", django_capture_on_commit_callbacks)


def _start_deployments(arn: str) -> list[str]:
    return [
        o.id for o in apprunner.list_operations(service_arn=arn) if o.type == "START_DEPLOYMENT"
    ]


def test_a_live_lease_is_not_taken_over(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.utils import timezone

    deployment = start(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    # Another worker is running it right now (fresh heartbeat, its own lease).
    Deployment.objects.filter(pk=deployment.pk).update(
        status="in_progress",
        runner="other-worker",
        heartbeat_at=timezone.now(),
        started_at=timezone.now(),
    )
    deployment_execute(deployment_id=deployment.pk)  # e.g. a duplicate delivery
    deployment.refresh_from_db()
    assert deployment.status == "in_progress" and deployment.runner == "other-worker"
    assert _start_deployments(deploy_stack["arn"]) == []


def test_takeover_adopts_the_dead_workers_operation(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.utils import timezone

    deployment = start(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    long_ago = timezone.now() - timezone.timedelta(minutes=10)
    Deployment.objects.filter(pk=deployment.pk).update(
        status="in_progress",
        runner="dead-worker",
        heartbeat_at=long_ago,
        started_at=timezone.now() - timezone.timedelta(seconds=2),
    )
    # The dead worker got as far as starting the App Runner deployment.
    operation_id = apprunner.start_deployment(service_arn=deploy_stack["arn"])
    deployment_execute(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "succeeded", deployment.error
    assert deployment.operation_id == operation_id
    assert _start_deployments(deploy_stack["arn"]) == [operation_id]  # no second deployment
    assert any("adopted" in e.message for e in deployment.events.all())


def test_a_worker_that_lost_its_lease_stops(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments import services

    deployment = start(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    Deployment.objects.filter(pk=deployment.pk).update(status="in_progress", runner="mine")
    deployment.refresh_from_db()
    Deployment.objects.filter(pk=deployment.pk).update(runner="someone-else")
    with pytest.raises(services._LostLease):
        services._heartbeat(deployment)
    assert services._finish(deployment, "failed", error="x", restore_pointer=True) is False
    deployment.refresh_from_db()
    assert deployment.status == "in_progress"
    assert json.loads(ssm.get_parameter(name="/models/iris/staging") or "")["version"] == "1.1"


def test_rollback_skips_redeployments_of_the_same_version(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments.services import rollback_target

    for version in ("1.1", "1.1"):  # a promote, then a redeploy of the same version
        d = start(deploy_stack, personas["deployer"], version, django_capture_on_commit_callbacks)
        deployment_execute(deployment_id=d.pk)
    environment = deploy_stack["environment"]
    environment.refresh_from_db()
    target = rollback_target(environment=environment)
    assert target is not None and target[0] == "1.0"
