"""The local stack exactly as `make run` starts it (`python -m devstack up`),
on free ports and a temporary state directory, shared by the e2e and browser
tests of one session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _redis_url_for_stack(db: int = 14) -> str:
    # Its own Redis database, so its worker never takes the other tests' tasks.
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    base, _, _db = url.rpartition("/")
    return f"{base}/{db}"


def stack_environment(state_dir: Path, *, redis_db: int = 14) -> dict[str, str]:
    """The environment of a local stack on free ports with its own state."""
    ports = {
        name: free_port() for name in ("dashboard", "aws", "apprunner", "production", "staging")
    }
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "AWS_ENDPOINT_URL"}}
    env.update({f"MODELDECK_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "MODELDECK_STATE_DIR": str(state_dir),
            "REDIS_URL": _redis_url_for_stack(redis_db),
            "DEPLOYMENT_POLL_SECONDS": "0.5",
            "DEPLOYMENT_RECONCILE_EVERY_SECONDS": "0.5",
            # Small parts so upload tests exercise several parts and resume.
            "UPLOAD_PART_BYTES": str(5 * 1024 * 1024),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['aws']}",
            "AWS_ENDPOINT_URL_APPRUNNER": f"http://127.0.0.1:{ports['apprunner']}",
        }
    )
    return env


class RunningStack:
    """A `python -m devstack up` process that a test may stop and start again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.state_dir = Path(env["MODELDECK_STATE_DIR"])
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> LocalStack:
        self._log = (self.state_dir / "stack.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        env = self.env
        stack = LocalStack(
            dashboard=f"http://127.0.0.1:{env['MODELDECK_DASHBOARD_PORT']}",
            staging=f"http://127.0.0.1:{env['MODELDECK_STAGING_PORT']}",
            production=f"http://127.0.0.1:{env['MODELDECK_PRODUCTION_PORT']}",
            aws=env["AWS_ENDPOINT_URL"],
            state_dir=self.state_dir,
            env=env,
            password="",
        )
        _wait_up(self.process, stack, self.state_dir)
        password = (self.state_dir / "credentials.txt").read_text().split()[-1]
        return LocalStack(**{**stack.__dict__, "password": password})

    def stop(self) -> None:
        """Stop it as Ctrl-C does (every process gets SIGTERM)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if os.environ.get("MODELDECK_NO_REDIS") == "1":
        pytest.skip("Redis is absent and could not be started")
    running = RunningStack(stack_environment(tmp_path_factory.mktemp("stack")))
    try:
        ready = running.start()
        _wait_validated(ready)
        yield ready
    finally:
        running.stop()


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


# Debian's chromium, headless, quiet: no first-run, sync, update or QUIC traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A real browser (Playwright driving Debian's chromium), closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
