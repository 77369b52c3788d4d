"""``python -m devstack.apprunner`` as a process: startup, the API via env, signals, cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

FAKE_INSTANCE = Path(__file__).with_name("apprunner_fake_instance.py")
REPO = Path(__file__).resolve().parents[2]
PATIENCE_SECONDS = 60.0  # a safety net against hanging, not a performance bound


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return result


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def running(client: Any, arn: str) -> bool:
    return client.describe_service(ServiceArn=arn)["Service"]["Status"] == "RUNNING"


class StandInProcess:
    """The stand-in as a child process whose stdout lines are collected by a thread."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.apprunner", "--config", str(config), *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Kill the process if it still runs (SIGKILL skips its cleanup) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(PATIENCE_SECONDS)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        """Return the match of the first output line (so far or to come) matching ``pattern``."""
        for line in self.seen:
            if match := re.search(pattern, line):
                return match
        deadline = time.monotonic() + PATIENCE_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no output line matched {pattern!r}; got {self.seen}")


@pytest.fixture
def launch() -> Iterator[Callable[..., StandInProcess]]:
    started: list[StandInProcess] = []

    def start(config: Path, *extra: str) -> StandInProcess:
        started.append(StandInProcess(config, *extra))
        return started[-1]

    yield start
    for stand_in in started:
        stand_in.close()


def write_config(tmp_path: Path, services: list[dict[str, Any]]) -> Path:
    config = tmp_path / "apprunner.json"
    config.write_text(
        json.dumps(
            {
                "region": "eu-west-1",
                "account_id": "123456789012",
                "state_dir": str(tmp_path / "state"),
                "services": services,
            }
        )
    )
    return config


def fake_service(tmp_path: Path, name: str, **behaviour: Any) -> dict[str, Any]:
    (tmp_path / "pids").mkdir(exist_ok=True)
    (tmp_path / f"{name}.json").write_text(json.dumps(behaviour))
    return {
        "name": name,
        "port": 0,
        "command": [sys.executable, str(FAKE_INSTANCE)],
        "env": {
            "FAKE_BEHAVIOUR_FILE": str(tmp_path / f"{name}.json"),
            "FAKE_PID_DIR": str(tmp_path / "pids"),
        },
        "health_check_path": "/readyz",
        "health_check_interval_seconds": 0.05,
        "stop_grace_seconds": 0.5,
    }


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_signalled_and_leaves_no_process(
    tmp_path: Path,
    launch: Callable[..., StandInProcess],
    monkeypatch: pytest.MonkeyPatch,
    signum: signal.Signals,
) -> None:
    config = write_config(
        tmp_path,
        [
            fake_service(tmp_path, "svc-one", version="v1", spawn_child=True),
            fake_service(tmp_path, "svc-two", version="v1", ignore_sigterm=True),
        ],
    )
    stand_in = launch(config, "--port", "0")
    endpoint = stand_in.wait_for_line(r"App Runner API listening on (http://\S+)")[1]
    url = stand_in.wait_for_line(r"service svc-one: \S+ at (http://\S+)")[1]
    # An unmodified client finds the endpoint the standard way.
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPRUNNER", endpoint)
    client = boto3.client(
        "apprunner", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    arns = [s["ServiceArn"] for s in client.list_services()["ServiceSummaryList"]]
    assert all(arn.startswith("arn:aws:apprunner:eu-west-1:123456789012:service/") for arn in arns)
    for arn in arns:
        eventually(partial(running, client, arn), "services to run")
    assert httpx.get(url + "/version").json()["version"] == "v1"
    pids = {int(p.name) for p in (tmp_path / "pids").iterdir()}
    assert len(pids) == 3

    stand_in.process.send_signal(signum)

    assert stand_in.process.wait(timeout=PATIENCE_SECONDS) == 0
    eventually(lambda: not any(process_alive(pid) for pid in pids), "every instance to be gone")
    stand_in.wait_for_line(r"App Runner stand-in stopped")
    log = (tmp_path / "state" / "logs" / "svc-two.log").read_text()
    assert "ignored SIGTERM" in log
    # The instance's own exit is reported (not that of the process leading its group).
    log = (tmp_path / "state" / "logs" / "svc-one.log").read_text()
    assert "stopped (exit code -15)" in log
    # One line each for the whole stand-in, not one per HTTP server (API + 2 services),
    # and no line per health probe or proxied request.
    output = stand_in.seen
    assert sum("App Runner stand-in started" in line for line in output) == 1, output
    assert not [line for line in output if "server process" in line], output
    assert not [line for line in output if "Shutting down" in line], output
    assert not [line for line in output if "HTTP Request:" in line], output


def test_instances_do_not_outlive_a_killed_stand_in(
    tmp_path: Path, launch: Callable[..., StandInProcess]
) -> None:
    config = write_config(
        tmp_path,
        [
            fake_service(tmp_path, "svc-one", spawn_child=True),
            fake_service(tmp_path, "svc-two", ignore_sigterm=True),
        ],
    )
    stand_in = launch(config, "--port", "0")
    for name in ("svc-one", "svc-two"):
        stand_in.wait_for_line(rf"\[{name}\] CREATE_SERVICE \S+ succeeded")
    pids = {int(p.name) for p in (tmp_path / "pids").iterdir()}
    assert len(pids) == 3 and all(process_alive(pid) for pid in pids)

    stand_in.process.kill()  # SIGKILL: no handler of the stand-in runs
    stand_in.process.wait()

    try:
        # Both the child an instance forked and an instance ignoring SIGTERM included.
        eventually(lambda: not any(process_alive(pid) for pid in pids), "every instance to be gone")
    finally:
        for pid in pids:  # a failure must not leave them to the next test run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_bad_configuration_is_refused_with_its_reason(
    tmp_path: Path, launch: Callable[..., StandInProcess]
) -> None:
    config = write_config(tmp_path, [{"name": "x", "port": 0, "command": ["true"]}])

    stand_in = launch(config)

    assert stand_in.process.wait(timeout=PATIENCE_SECONDS) == 2
    stand_in.wait_for_line(r"not a valid App Runner service name")


def test_a_taken_port_is_refused_with_its_reason(
    tmp_path: Path, launch: Callable[..., StandInProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = fake_service(tmp_path, "svc-one") | {"port": port}
        config = write_config(tmp_path, [service])

        stand_in = launch(config, "--port", "0")

        assert stand_in.process.wait(timeout=PATIENCE_SECONDS) == 1
        stand_in.wait_for_line(rf"cannot listen on 127.0.0.1:{port} for service svc-one")
    assert not (tmp_path / "pids").exists() or not os.listdir(tmp_path / "pids")
