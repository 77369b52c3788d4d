"""Faults on the real local stack (its own, on free ports, so it can be broken):
the worker's pool killed right after a promote, the whole stack stopped and
started again mid-deployment, and 50 promotes of one environment at once on
the stack's SQLite. Each deployment must reach its true end from what AWS
reports, with one App Runner deployment per dashboard deployment."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.e2e.conftest import LocalStack, RunningStack, _wait_validated, stack_environment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, LocalStack]]:
    if os.environ.get("MODELDECK_NO_REDIS") == "1":
        pytest.skip("Redis is absent and could not be started")
    running = RunningStack(stack_environment(tmp_path_factory.mktemp("faults"), redis_db=13))
    try:
        stack = running.start()
        _wait_validated(stack)
        yield running, stack
    finally:
        running.stop()


def headers(stack: LocalStack, user: str = "deployer") -> dict[str, str]:
    return {"Authorization": f"Token {stack.api_token(user)}"}


def promote(stack: LocalStack, auth: dict[str, str], environment: str, version: str) -> Any:
    return httpx.post(
        f"{stack.dashboard}/api/models/iris/environments/{environment}/promote",
        headers=auth,
        json={"version": version, "reason": "fault test"},
        timeout=30,
    )


def wait_final(
    stack: LocalStack, auth: dict[str, str], deployment_id: int, timeout: float = 300
) -> Any:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        try:
            body = httpx.get(
                f"{stack.dashboard}/api/deployments/{deployment_id}", headers=auth, timeout=10
            ).json()
        except httpx.HTTPError:
            body = None  # the dashboard is restarting
        if body and body["status"] in {"succeeded", "failed", "rolled_back"}:
            return body
        time.sleep(0.5)
    raise AssertionError(f"deployment {deployment_id} did not finish: {body}")


def environment(stack: LocalStack, auth: dict[str, str], name: str) -> Any:
    found = httpx.get(
        f"{stack.dashboard}/api/models/iris/environments", headers=auth, timeout=30
    ).json()
    return next(e for e in found if e["name"] == name)


def other_version(stack: LocalStack, auth: dict[str, str], current: str) -> str:
    versions = httpx.get(
        f"{stack.dashboard}/api/models/iris/versions?status=valid", headers=auth, timeout=30
    ).json()["items"]
    return next(
        v["version"] for v in versions if v["version"] != current and v["format"] == "torchscript"
    )


def update_operations(stack: LocalStack, service: str, since: dt.datetime) -> list[Any]:
    client = boto3.client(
        "apprunner",
        endpoint_url=stack.env["AWS_ENDPOINT_URL_APPRUNNER"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    arn = next(
        s["ServiceArn"]
        for s in client.list_services()["ServiceSummaryList"]
        if s["ServiceName"] == service
    )
    return [
        o
        for o in client.list_operations(ServiceArn=arn)["OperationSummaryList"]
        if o["Type"] == "UPDATE_SERVICE" and o["StartedAt"] >= since
    ]


def worker_pids(state_dir: Path) -> list[int]:
    """The stack's Celery worker processes (main and pool), found by their
    command line and their MODELDECK_STATE_DIR."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"celery" in command
            and b" worker" in command
            and (f"MODELDECK_STATE_DIR={state_dir}".encode() in environ)
        ):
            pids.append(int(entry.name))
    return pids


def test_the_worker_killed_right_after_a_promote(faulty: tuple[RunningStack, LocalStack]) -> None:
    running, stack = faulty
    auth = headers(stack)
    current = environment(stack, auth, "staging")["live_version"]
    target = other_version(stack, auth, current)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    response = promote(stack, auth, "staging", target)
    assert response.status_code == 202, response.text
    time.sleep(1)
    killed = worker_pids(running.state_dir)
    assert killed, "no worker process found"
    for pid in killed:  # what the OOM killer or a replaced container does
        os.kill(pid, signal.SIGKILL)
    body = wait_final(stack, auth, response.json()["id"])
    assert body["status"] == "succeeded", body
    assert environment(stack, auth, "staging")["live_version"] == target
    assert len(update_operations(stack, "iris-staging", since)) == 1  # never sent twice
    log = (running.state_dir / "stack.log").read_text()
    assert "worker exited unexpectedly (killed by SIGKILL); restarting it" in log


def test_fifty_promotes_at_once_start_exactly_one(faulty: tuple[RunningStack, LocalStack]) -> None:
    _, stack = faulty
    auth = headers(stack)
    current = environment(stack, auth, "production")["live_version"]
    target = other_version(stack, auth, current)
    barrier = threading.Barrier(50)
    answers: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            status = client.post(
                f"{stack.dashboard}/api/models/iris/environments/production/promote",
                headers=auth,
                json={"version": target, "reason": "race"},
            ).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] + [409] * 49
    deployment = environment(stack, auth, "production")["deployment_in_flight"]
    assert wait_final(stack, auth, deployment["id"])["status"] == "succeeded"


def test_the_whole_stack_stopped_and_started_mid_deployment(
    faulty: tuple[RunningStack, LocalStack],
) -> None:
    running, stack = faulty
    auth = headers(stack)
    before = environment(stack, auth, "staging")
    target = other_version(stack, auth, before["live_version"])
    response = promote(stack, auth, "staging", target)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while environment(stack, auth, "staging")["deployment_in_flight"]["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    running.stop()  # Ctrl-C in the middle of the deployment
    stack = running.start()
    body = wait_final(stack, auth, response.json()["id"])
    assert body["status"] in {"succeeded", "failed", "rolled_back"}, body
    # Whatever happened, the pointer, the service and the record agree again.
    deadline = time.monotonic() + 180
    while True:
        state = environment(stack, auth, "staging")
        if state["deployment_in_flight"] is None:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["drift"] is None, state
    assert state["promoted_version"] == state["live_version"]
    again = promote(stack, auth, "staging", before["live_version"])
    assert again.status_code == 202, again.text  # the environment was released
    assert wait_final(stack, auth, again.json()["id"])["status"] == "succeeded"
