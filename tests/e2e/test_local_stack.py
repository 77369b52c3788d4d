"""End to end: the stack `make run` starts; promote through the API, watch
the deployment finish, and call the inference service that now serves it."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e


def wait_final(
    stack: LocalStack, headers: dict[str, str], deployment_id: int, timeout: float = 180
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(
            f"{stack.dashboard}/api/deployments/{deployment_id}", headers=headers
        ).json()
        if body["status"] in {"succeeded", "failed", "rolled_back"}:
            return body
        time.sleep(0.5)
    raise AssertionError(f"deployment {deployment_id} did not finish")


def test_promote_through_the_api_goes_live_without_a_gap(local_stack: LocalStack) -> None:
    headers = {"Authorization": f"Token {local_stack.api_token('deployer')}"}
    environments = httpx.get(
        f"{local_stack.dashboard}/api/models/iris/environments", headers=headers
    ).json()
    staging = next(e for e in environments if e["name"] == "staging")
    assert staging["live_version"] == staging["promoted_version"] is not None
    versions = httpx.get(
        f"{local_stack.dashboard}/api/models/iris/versions", headers=headers
    ).json()
    target = next(
        v["version"]
        for v in versions["items"]
        if v["format"] == "torchscript" and v["version"] != staging["live_version"]
    )

    failures: list[str] = []
    answers: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{local_stack.staging}/version")
                    if response.status_code != 200:
                        failures.append(str(response.status_code))
                    else:
                        answers.add(response.json()["version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.02)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        response = httpx.post(
            f"{local_stack.dashboard}/api/models/iris/environments/staging/promote",
            headers=headers,
            json={"version": target, "reason": "e2e"},
        )
        assert response.status_code == 202, response.text
        deployment = wait_final(local_stack, headers, response.json()["id"])
    finally:
        stop.set()
        thread.join()
    assert deployment["status"] == "succeeded", deployment
    assert deployment["live_version"] == target
    assert failures == []  # the stable URL never stopped answering
    assert answers == {staging["live_version"], target}

    version = httpx.get(f"{local_stack.staging}/version").json()
    assert version["version"] == target and version["model"] == "iris"
    prediction = httpx.post(
        f"{local_stack.staging}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert prediction.status_code == 200
    outputs = prediction.json()["outputs"]
    assert len(outputs) == 1 and len(outputs[0]) == 3 and abs(sum(outputs[0]) - 1) < 1e-4
    bad = httpx.post(f"{local_stack.staging}/predict", json={"inputs": [[1, 2]]})
    assert bad.status_code == 422


def test_promote_conflict_and_bad_input_over_http(local_stack: LocalStack) -> None:
    headers = {"Authorization": f"Token {local_stack.api_token('admin')}"}
    url = f"{local_stack.dashboard}/api/models/iris/environments/production/promote"
    assert httpx.post(url, headers=headers, json={"version": "no-such"}).status_code == 400
    assert httpx.post(url, headers=headers, content=b"{").status_code == 400
    assert httpx.post(url, json={"version": "x"}).status_code == 401
    assert (
        httpx.get(
            f"{local_stack.dashboard}/api/models/iris/versions?page=-1", headers=headers
        ).status_code
        == 400
    )


def test_ci_upload_tool_publishes_a_valid_version(local_stack: LocalStack, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    demo = sorted((local_stack.state_dir / "demo-model").glob("*/model.pt"))[-1]
    env = {
        **os.environ,
        "MODELDECK_URL": local_stack.dashboard,
        "MODELDECK_TOKEN": local_stack.api_token("deployer"),
    }
    tool = Path(__file__).resolve().parents[2] / "tools" / "modeldeck_upload.py"
    result = subprocess.run(
        [
            sys.executable,
            str(tool),
            "iris",
            "from-ci-1",
            str(demo),
            "--shape",
            "4",
            "--metric",
            "accuracy=0.9",
            "--notes",
            "from the CI tool",
            "--wait",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from-ci-1: valid" in result.stdout
    again = subprocess.run(
        [sys.executable, str(tool), "iris", "from-ci-1", str(demo), "--shape", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A CI job re-run with the same file finds it there (nothing to do) ...
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already uploaded with the same SHA-256" in again.stdout
    # ... and a different file under the same name is a conflict retrying cannot fix.
    other = tmp_path / "other.pt"
    other.write_bytes(demo.read_bytes() + b"\0")
    conflict = subprocess.run(
        [sys.executable, str(tool), "iris", "from-ci-1", str(other), "--shape", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert conflict.returncode == 3, conflict.stdout + conflict.stderr


def test_validation_runs_in_its_own_worker_without_aws_credentials(
    local_stack: LocalStack,
) -> None:
    """As in production: the worker that runs model files serves only the
    validation queue (a slow model never holds up a deployment step) and has
    no AWS credentials (its ticket carries a presigned URL)."""
    from pathlib import Path

    workers: dict[str, list[bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        state = f"MODELDECK_STATE_DIR={local_stack.state_dir}".encode()
        if b"celery" in command and b"worker" in command and state in environ:
            queues = command[command.index(b"--queues") + 1].decode()
            workers.setdefault(queues, environ)
    assert set(workers) == {"celery", "validation"}, set(workers)
    assert not [v for v in workers["validation"] if v.startswith(b"AWS_SECRET_ACCESS_KEY=")]
    assert [v for v in workers["celery"] if v.startswith(b"AWS_SECRET_ACCESS_KEY=")]
