"""End to end on the ECS target: the same local stack with its environments
linked through the stand-in's ECS Express view of the inference services
(MODELDECK_DEVSTACK_TARGET=ecs_express): a promote through the API goes live
without a gap, followed as an ECS service deployment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e import test_local_stack as app_runner_e2e
from tests.e2e.conftest import LocalStack, RunningStack, _wait_validated, stack_environment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ecs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if os.environ.get("MODELDECK_NO_REDIS") == "1":
        pytest.skip("Redis is absent and could not be started")
    env = stack_environment(tmp_path_factory.mktemp("ecs-stack"), redis_db=12)
    env["MODELDECK_DEVSTACK_TARGET"] = "ecs_express"
    running = RunningStack(env)
    try:
        ready = running.start()
        _wait_validated(ready)
        yield ready
    finally:
        running.stop()


def test_promote_goes_live_through_the_ecs_target(ecs_stack: LocalStack) -> None:
    headers = {"Authorization": f"Token {ecs_stack.api_token('deployer')}"}
    environments = httpx.get(
        f"{ecs_stack.dashboard}/api/models/iris/environments", headers=headers
    ).json()
    staging = next(e for e in environments if e["name"] == "staging")
    assert staging["target"] == "ecs_express"
    assert staging["service_arn"].startswith("arn:aws:ecs:")
    # The App Runner stack's own test, unchanged: no gap, the new version live.
    app_runner_e2e.test_promote_through_the_api_goes_live_without_a_gap(ecs_stack)
    history = httpx.get(
        f"{ecs_stack.dashboard}/api/models/iris/environments/staging/history", headers=headers
    ).json()
    newest = next(h for h in history if h["deployment_id"] is not None)
    deployment = httpx.get(
        f"{ecs_stack.dashboard}/api/deployments/{newest['deployment_id']}", headers=headers
    ).json()
    assert deployment["status"] == "succeeded"
    assert ":service-deployment/devstack/" in deployment["operation_id"]
    assert deployment["operation_status"] == "SUCCESSFUL"  # ECS's word (App Runner: SUCCEEDED)


def test_monitoring_reads_the_ecs_names(ecs_stack: LocalStack) -> None:
    """The stand-in ships under ECS's names on this target (--ecs-names), and
    the dashboard finds them through the ECS view: requests sent to staging
    show in its load balancer's RequestCount and its lines in its awslogs group."""
    import time

    headers = {"Authorization": f"Token {ecs_stack.api_token('deployer')}"}
    with httpx.Client() as http:
        for _ in range(5):
            http.get(f"{ecs_stack.staging.rstrip('/')}/readyz")
    base = f"{ecs_stack.dashboard}/api/models/iris/environments/staging"
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{base}/metrics?metric=Requests", headers=headers)
        assert answer.status_code == 200, answer.text
        if sum(v for _, v in answer.json()["points"]) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert sum(v for _, v in answer.json()["points"]) >= 5
    logs = httpx.get(f"{base}/logs", headers=headers)
    assert logs.status_code == 200, logs.text
    events = logs.json()["events"]
    assert events and all(e["stream"].startswith("inference/main/") for e in events)
    refused = httpx.get(f"{base}/logs?stream=service", headers=headers)
    assert refused.status_code == 400 and "no service log group" in refused.text
