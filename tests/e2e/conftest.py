"""The local stack exactly as `make run` starts it (`python -m devstack up`),
on free ports and a temporary state directory, shared by the e2e and browser
tests of one session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LocalStack:
    dashboard: str
    staging: str
    production: str
    aws: str
    state_dir: Path
    env: dict[str, str]
    password: str

    def api_token(self, username: str = "admin") -> str:
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "create_api_token",
                username,
                "--name",
                "e2e",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return result.stdout.strip().splitlines()[-1]


def _redis_url_for_stack() -> str:
    # Its own Redis database, so its worker never takes the other tests' tasks.
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    base, _, _db = url.rpartition("/")
    return f"{base}/14"


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if os.environ.get("MODELDECK_NO_REDIS") == "1":
        pytest.skip("Redis is absent and could not be started")
    state_dir = tmp_path_factory.mktemp("stack")
    ports = {
        name: free_port() for name in ("dashboard", "aws", "apprunner", "production", "staging")
    }
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "AWS_ENDPOINT_URL"}}
    env.update({f"MODELDECK_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "MODELDECK_STATE_DIR": str(state_dir),
            "REDIS_URL": _redis_url_for_stack(),
            "DEPLOYMENT_POLL_SECONDS": "0.5",
            # Small parts so upload tests exercise several parts and resume.
            "UPLOAD_PART_BYTES": str(5 * 1024 * 1024),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['aws']}",
            "AWS_ENDPOINT_URL_APPRUNNER": f"http://127.0.0.1:{ports['apprunner']}",
        }
    )
    log = (state_dir / "stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "up"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = LocalStack(
        dashboard=f"http://127.0.0.1:{ports['dashboard']}",
        staging=f"http://127.0.0.1:{ports['staging']}",
        production=f"http://127.0.0.1:{ports['production']}",
        aws=env["AWS_ENDPOINT_URL"],
        state_dir=state_dir,
        env=env,
        password="",
    )
    try:
        _wait_up(process, stack, state_dir)
        password = (state_dir / "credentials.txt").read_text().split()[-1]
        ready = LocalStack(**{**stack.__dict__, "password": password})
        _wait_validated(ready)
        yield ready
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _wait_validated(stack: LocalStack, timeout: float = 180) -> None:
    """The seed's versions are validated by the stack's own worker: wait for it."""
    headers = {"Authorization": f"Token {stack.api_token('viewer')}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(
            f"{stack.dashboard}/api/models/iris/versions?status=valid", headers=headers
        ).json()
        if body["total"] >= 4:
            return
        time.sleep(1)
    raise AssertionError(
        "the demo versions were not validated:\n"
        + (stack.state_dir / "stack.log").read_text()[-5000:]
    )


def _wait_up(process: subprocess.Popen[bytes], stack: LocalStack, state_dir: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                "the stack exited:\n" + (state_dir / "stack.log").read_text()[-5000:]
            )
        try:
            if (
                httpx.get(f"{stack.dashboard}/healthz", timeout=1).status_code == 200
                and httpx.get(f"{stack.staging}/readyz", timeout=1).status_code == 200
                and httpx.get(f"{stack.production}/readyz", timeout=1).status_code == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        "the stack did not come up:\n" + (state_dir / "stack.log").read_text()[-5000:]
    )
