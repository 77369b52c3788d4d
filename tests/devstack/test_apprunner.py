"""The local App Runner stand-in, driven only through an unmodified boto3 client and HTTP.

Each test runs the stand-in in-process (``run_in_background``) with services
whose instances are ``apprunner_fake_instance.py``; a JSON file per service
decides how the next instance behaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.stub import Stubber

from devstack.apprunner import run_in_background, service_arn_for, service_id_for
from devstack.apprunner.config import ConfigError, parse_config
from devstack.apprunner.logsink import MemorySink
from devstack.apprunner.server import RunningStandIn

FAKE_INSTANCE = Path(__file__).with_name("apprunner_fake_instance.py")
TERMINAL = {"SUCCEEDED", "FAILED", "ROLLBACK_SUCCEEDED", "ROLLBACK_FAILED"}
# Only a safety net so that a broken stand-in fails a test instead of hanging it.
PATIENCE_SECONDS = 60.0


def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def running_status(client: Any, arn: str) -> bool:
    return client.describe_service(ServiceArn=arn)["Service"]["Status"] == "RUNNING"


def apprunner_client(endpoint_url: str) -> Any:
    return boto3.client(
        "apprunner",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


@dataclass
class Stack:
    """A running stand-in plus the handles a test needs."""

    running: RunningStandIn
    client: Any
    sink: MemorySink
    tmp: Path
    state_dir: Path
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def arn(self, name: str) -> str:
        return self.running.service_arns[name]

    def url(self, name: str) -> str:
        return self.running.service_urls[name]

    def get(self, name: str, path: str) -> httpx.Response:
        return httpx.get(self.url(name) + path, timeout=30)

    def describe(self, name: str) -> dict[str, Any]:
        return self.client.describe_service(ServiceArn=self.arn(name))["Service"]

    def operations(self, name: str) -> list[dict[str, Any]]:
        return self.client.list_operations(ServiceArn=self.arn(name))["OperationSummaryList"]

    def wait_settled(self, name: str) -> dict[str, Any]:
        """Wait until the service is no longer OPERATION_IN_PROGRESS; return it."""
        return eventually(
            lambda: (s := self.describe(name))["Status"] != "OPERATION_IN_PROGRESS" and s,
            f"{name} to settle",
        )

    def wait_operation(self, name: str, operation_id: str) -> dict[str, Any]:
        """Wait until the operation has ended; return its summary."""

        def ended() -> dict[str, Any] | None:
            for operation in self.operations(name):
                if operation["Id"] == operation_id and operation["Status"] in TERMINAL:
                    return operation
            return None

        return eventually(ended, f"operation {operation_id} to end")

    def deploy(self, name: str) -> dict[str, Any]:
        operation_id = self.client.start_deployment(ServiceArn=self.arn(name))["OperationId"]
        return self.wait_operation(name, operation_id)

    def behave(self, name: str, **behaviour: Any) -> None:
        """Decide how the next instance of ``name`` behaves."""
        Path(self.service_env[name]["FAKE_BEHAVIOUR_FILE"]).write_text(json.dumps(behaviour))

    def pids(self) -> set[int]:
        """Every pid any fake instance (or its child) has had so far."""
        return {int(p.name) for p in (self.tmp / "pids").iterdir()}

    def service_log(self, name: str) -> list[str]:
        return [r.message for r in self.sink.records(name) if r.stream == "service"]


def fake_service(tmp: Path, name: str, **overrides: Any) -> dict[str, Any]:
    (tmp / "pids").mkdir(exist_ok=True)
    service = {
        "name": name,
        "port": 0,
        "command": [sys.executable, str(FAKE_INSTANCE)],
        "env": {
            "FAKE_BEHAVIOUR_FILE": str(tmp / f"{name}.json"),
            "FAKE_PID_DIR": str(tmp / "pids"),
            "VERSION": "v1",
        },
        "health_check_path": "/readyz",
        "health_check_interval_seconds": 0.05,
        "health_check_timeout_seconds": 30,
        "stop_grace_seconds": 2,
    }
    service.update(overrides)
    return service


class StackStarter:
    """Starts stand-ins whose files live under ``tmp``; ``exits`` stops them."""

    def __init__(self, tmp: Path, exits: contextlib.ExitStack) -> None:
        self._tmp = tmp
        self._exits = exits
        self._count = 0

    def __call__(
        self,
        *services: dict[str, Any],
        behaviours: dict[str, dict[str, Any]] | None = None,
        state_dir: Path | None = None,
    ) -> Stack:
        for name, behaviour in (behaviours or {}).items():
            (self._tmp / f"{name}.json").write_text(json.dumps(behaviour))
        self._count += 1
        state = state_dir or self._tmp / f"state-{self._count}"
        config = parse_config({"state_dir": str(state), "services": list(services)})
        sink = MemorySink()
        running = self._exits.enter_context(run_in_background(config, extra_sinks=[sink]))
        return Stack(
            running=running,
            client=apprunner_client(running.endpoint_url),
            sink=sink,
            tmp=self._tmp,
            state_dir=state,
            service_env={s["name"]: s["env"] for s in services},
        )


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[StackStarter]:
    """Start a stand-in for the given services; every one is stopped at teardown."""
    with contextlib.ExitStack() as exits:
        yield StackStarter(tmp_path, exits)


@pytest.fixture
def stack(start_stack: StackStarter, tmp_path: Path) -> Stack:
    """One healthy service ``svc-one`` serving version v1."""
    started = start_stack(fake_service(tmp_path, "svc-one"))
    assert started.wait_settled("svc-one")["Status"] == "RUNNING"
    return started


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Like ``stack``, shared by the tests that only read (and send bad requests)."""
    tmp = tmp_path_factory.mktemp("shared")
    with contextlib.ExitStack() as exits:
        started = StackStarter(tmp, exits)(fake_service(tmp, "svc-one"))
        assert started.wait_settled("svc-one")["Status"] == "RUNNING"
        yield started


# -- shapes ------------------------------------------------------------------------------


def test_list_services_and_describe_service_report_each_configured_service(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(fake_service(tmp_path, "svc-alpha"), fake_service(tmp_path, "svc-beta"))
    for name in ("svc-alpha", "svc-beta"):
        assert stack.wait_settled(name)["Status"] == "RUNNING"

    summaries = stack.client.list_services()["ServiceSummaryList"]

    assert [s["ServiceName"] for s in summaries] == ["svc-alpha", "svc-beta"]
    for summary in summaries:
        name = summary["ServiceName"]
        assert re.fullmatch(r"[0-9a-f]{32}", summary["ServiceId"])
        assert summary["ServiceArn"] == (
            f"arn:aws:apprunner:us-east-1:000000000000:service/{name}/{summary['ServiceId']}"
        )
        assert summary["ServiceArn"] == stack.arn(name)
        # A bare host:port, as App Runner reports a bare domain.
        assert re.fullmatch(r"127\.0\.0\.1:\d+", summary["ServiceUrl"])
        assert f"http://{summary['ServiceUrl']}" == stack.url(name)
        assert summary["Status"] == "RUNNING"
    assert summaries[0]["ServiceId"] != summaries[1]["ServiceId"]

    service = stack.describe("svc-alpha")
    image = service["SourceConfiguration"]["ImageRepository"]
    assert image["ImageRepositoryType"] == "ECR_PUBLIC"
    assert (
        image["ImageConfiguration"]["RuntimeEnvironmentVariables"]
        == (stack.service_env["svc-alpha"])
    )
    assert image["ImageConfiguration"]["Port"] == str(int(image["ImageConfiguration"]["Port"]))
    assert service["HealthCheckConfiguration"]["Protocol"] == "HTTP"
    assert service["HealthCheckConfiguration"]["Path"] == "/readyz"
    assert service["InstanceConfiguration"] == {"Cpu": "1024", "Memory": "2048"}
    assert service["CreatedAt"] <= service["UpdatedAt"]

    [create] = stack.operations("svc-alpha")
    assert create["Type"] == "CREATE_SERVICE"
    assert create["Status"] == "SUCCEEDED"
    assert create["TargetArn"] == stack.arn("svc-alpha")
    assert create["StartedAt"] <= create["EndedAt"]
    assert stack.get("svc-alpha", "/version").json()["version"] == "v1"


def test_service_arn_and_history_survive_a_restart(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    first = start_stack(fake_service(tmp_path, "svc-one"), state_dir=state_dir)
    first.wait_settled("svc-one")
    first_arn = first.arn("svc-one")
    first_create = first.operations("svc-one")[0]

    second = start_stack(fake_service(tmp_path, "svc-one"), state_dir=state_dir, behaviours={})
    second.wait_settled("svc-one")

    assert second.arn("svc-one") == first_arn
    assert first_arn == service_arn_for(
        region="us-east-1", account_id="000000000000", name="svc-one"
    )
    assert first_arn.endswith("/" + service_id_for("svc-one"))
    operations = second.operations("svc-one")
    assert [o["Type"] for o in operations] == ["CREATE_SERVICE", "CREATE_SERVICE"]
    assert operations[1]["Id"] == first_create["Id"]
    assert second.describe("svc-one")["CreatedAt"] == first.describe("svc-one")["CreatedAt"]


def test_list_services_and_list_operations_paginate(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(*(fake_service(tmp_path, f"svc-{n}") for n in ("a", "b", "c")))
    for name in ("svc-a", "svc-b", "svc-c"):
        stack.wait_settled(name)

    first = stack.client.list_services(MaxResults=2)
    second = stack.client.list_services(MaxResults=2, NextToken=first["NextToken"])

    assert [s["ServiceName"] for s in first["ServiceSummaryList"]] == ["svc-a", "svc-b"]
    assert [s["ServiceName"] for s in second["ServiceSummaryList"]] == ["svc-c"]
    assert "NextToken" not in second

    stack.deploy("svc-a")
    stack.deploy("svc-a")
    everything = stack.operations("svc-a")
    assert [o["Type"] for o in everything] == [
        "START_DEPLOYMENT",
        "START_DEPLOYMENT",
        "CREATE_SERVICE",
    ]
    assert everything[0]["StartedAt"] >= everything[1]["StartedAt"] >= everything[2]["StartedAt"]
    paged: list[str] = []
    kwargs: dict[str, Any] = {"ServiceArn": stack.arn("svc-a"), "MaxResults": 1}
    while True:
        page = stack.client.list_operations(**kwargs)
        assert len(page["OperationSummaryList"]) == 1
        paged += [o["Id"] for o in page["OperationSummaryList"]]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert paged == [o["Id"] for o in everything]


# -- deployments -----------------------------------------------------------------------


def test_start_deployment_swaps_the_stable_url_to_a_new_instance(stack: Stack) -> None:
    before = stack.get("svc-one", "/version").json()
    stack.behave("svc-one", version="v2")

    operation_id = stack.client.start_deployment(ServiceArn=stack.arn("svc-one"))["OperationId"]

    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", operation_id
    )
    operation = stack.wait_operation("svc-one", operation_id)
    assert operation["Type"] == "START_DEPLOYMENT"
    assert operation["Status"] == "SUCCEEDED"
    assert operation["TargetArn"] == stack.arn("svc-one")
    assert operation["StartedAt"] <= operation["UpdatedAt"] == operation["EndedAt"]
    assert stack.describe("svc-one")["Status"] == "RUNNING"
    after = stack.get("svc-one", "/version").json()
    assert after["version"] == "v2"
    assert after["pid"] != before["pid"]
    assert not process_alive(before["pid"])
    assert [o["Id"] for o in stack.operations("svc-one")][0] == operation_id


def test_clients_see_no_error_while_the_instance_is_swapped(stack: Stack) -> None:
    stack.behave("svc-one", version="v2", ready_delay=0.5)
    url = stack.url("svc-one")
    stop = threading.Event()
    seen: dict[str, list[Any]] = {"keep-alive": [], "new-connection": [], "slow": []}

    def hammer(kind: str, path: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    if kind == "new-connection":
                        response = httpx.get(url + path, timeout=30)
                    else:
                        response = client.get(url + path)
                    ok = response.status_code == 200
                    version = response.json()["version"] if ok else response.text
                    seen[kind].append((response.status_code, version))
                except Exception as exc:  # any failure is what this test looks for
                    seen[kind].append((repr(exc), None))

    threads = [
        threading.Thread(target=hammer, args=("keep-alive", "/version")),
        threading.Thread(target=hammer, args=("new-connection", "/version")),
        threading.Thread(target=hammer, args=("slow", "/slow?seconds=0.05")),
    ]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: all(len(v) >= 3 for v in seen.values()), "traffic before the swap")
        operation = stack.deploy("svc-one")
        count = {kind: len(v) for kind, v in seen.items()}
        eventually(lambda: all(len(v) >= count[k] + 3 for k, v in seen.items()), "traffic after it")
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert operation["Status"] == "SUCCEEDED"
    for kind, answers in seen.items():
        assert {status for status, _ in answers} == {200}, (kind, answers)
        versions = [version for _, version in answers]
        assert versions[0] == "v1" and versions[-1] == "v2", (kind, versions)
        # One client in sequence never goes back to the old instance.
        assert versions == sorted(versions), (kind, versions)


def test_requests_in_flight_finish_on_the_old_instance_before_it_stops(
    stack: Stack, tmp_path: Path
) -> None:
    old_pid = stack.get("svc-one", "/version").json()["pid"]
    started, release = tmp_path / "held-started", tmp_path / "held-release"
    held: list[httpx.Response] = []
    holder = threading.Thread(
        target=lambda: held.append(
            stack.get("svc-one", f"/hold?started={started}&release={release}")
        )
    )
    holder.start()
    try:
        eventually(started.exists, "the held request to reach the instance")
        stack.behave("svc-one", version="v2")
        operation_id = stack.client.start_deployment(ServiceArn=stack.arn("svc-one"))["OperationId"]
        eventually(
            lambda: stack.get("svc-one", "/version").json()["version"] == "v2",
            "traffic to move to v2",
        )
        # Draining: the old instance lives, the operation waits for it.
        assert process_alive(old_pid)
        assert stack.operations("svc-one")[0]["Status"] == "IN_PROGRESS"
    finally:
        release.touch()
        holder.join()

    assert held[0].status_code == 200
    assert held[0].json() == {"version": "v1", "held": True}
    assert stack.wait_operation("svc-one", operation_id)["Status"] == "SUCCEEDED"
    assert not process_alive(old_pid)


def test_deployment_that_never_gets_healthy_rolls_back(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(fake_service(tmp_path, "svc-one", health_check_timeout_seconds=1))
    stack.wait_settled("svc-one")
    before = stack.get("svc-one", "/version").json()
    pids_before = stack.pids()
    stack.behave("svc-one", version="v2", mode="never_ready")

    operation = stack.deploy("svc-one")

    assert operation["Status"] == "ROLLBACK_SUCCEEDED"
    assert stack.describe("svc-one")["Status"] == "RUNNING"
    assert stack.get("svc-one", "/version").json() == before
    [failed_pid] = stack.pids() - pids_before
    assert not process_alive(failed_pid)
    log = stack.service_log("svc-one")
    assert any("not healthy after 1 s" in line and "answered 503" in line for line in log), log
    assert any("ROLLBACK_SUCCEEDED" in line for line in log), log


def test_instance_that_exits_fails_the_deployment_at_once_with_its_last_words(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    # A timeout this long would show in the run time; the reason proves the exit was seen.
    stack = start_stack(fake_service(tmp_path, "svc-one", health_check_timeout_seconds=120))
    stack.wait_settled("svc-one")
    before = stack.get("svc-one", "/version").json()
    stack.behave("svc-one", version="v2", mode="exit")

    operation = stack.deploy("svc-one")

    assert operation["Status"] == "ROLLBACK_SUCCEEDED"
    assert stack.get("svc-one", "/version").json() == before
    log = stack.service_log("svc-one")
    assert any("exited with code 3 before becoming healthy" in line for line in log), log
    assert any("| fatal: cannot load the model (fake)" in line for line in log), log
    log_file = (stack.state_dir / "logs" / "svc-one.log").read_text()
    assert "exited with code 3 before becoming healthy" in log_file


def test_a_busy_service_refuses_another_operation_as_its_model_says(
    stack: Stack, tmp_path: Path
) -> None:
    gate = tmp_path / "v2-ready"
    stack.behave("svc-one", version="v2", ready_file=str(gate))
    operation_id = stack.client.start_deployment(ServiceArn=stack.arn("svc-one"))["OperationId"]

    assert stack.describe("svc-one")["Status"] == "OPERATION_IN_PROGRESS"
    assert stack.operations("svc-one")[0]["Status"] in {"PENDING", "IN_PROGRESS"}
    # StartDeployment's model lists no InvalidStateException: App Runner says
    # InvalidRequestException; UpdateService's model lists InvalidStateException.
    with pytest.raises(stack.client.exceptions.InvalidRequestException) as caught:
        stack.client.start_deployment(ServiceArn=stack.arn("svc-one"))
    assert "OPERATION_IN_PROGRESS" in caught.value.response["Error"]["Message"]
    with pytest.raises(stack.client.exceptions.InvalidStateException) as state:
        stack.client.update_service(ServiceArn=stack.arn("svc-one"))
    assert "OPERATION_IN_PROGRESS" in state.value.response["Error"]["Message"]
    # Still served by v1 while v2 is not healthy.
    assert stack.get("svc-one", "/version").json()["version"] == "v1"

    gate.touch()
    assert stack.wait_operation("svc-one", operation_id)["Status"] == "SUCCEEDED"
    assert stack.get("svc-one", "/version").json()["version"] == "v2"


def test_service_that_failed_to_create_answers_503_until_a_deployment_fixes_it(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(
        fake_service(tmp_path, "svc-one", health_check_timeout_seconds=0.5),
        behaviours={"svc-one": {"mode": "never_ready"}},
    )

    assert stack.wait_settled("svc-one")["Status"] == "CREATE_FAILED"
    [create] = stack.operations("svc-one")
    assert (create["Type"], create["Status"]) == ("CREATE_SERVICE", "FAILED")
    unavailable = stack.get("svc-one", "/version")
    assert unavailable.status_code == 503
    assert "no healthy instance" in unavailable.text

    # Deviation from AWS (documented): a CREATE_FAILED service may be deployed again.
    stack.behave("svc-one", version="v2")
    assert stack.deploy("svc-one")["Status"] == "SUCCEEDED"
    assert stack.describe("svc-one")["Status"] == "RUNNING"
    assert stack.get("svc-one", "/version").json()["version"] == "v2"


def test_failed_deployment_of_a_create_failed_service_stays_create_failed(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(
        fake_service(tmp_path, "svc-one", health_check_timeout_seconds=0.5),
        behaviours={"svc-one": {"mode": "exit"}},
    )
    assert stack.wait_settled("svc-one")["Status"] == "CREATE_FAILED"

    operation = stack.deploy("svc-one")

    assert operation["Status"] == "FAILED"
    assert stack.describe("svc-one")["Status"] == "CREATE_FAILED"


def test_deployments_of_different_services_run_concurrently(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    stack = start_stack(fake_service(tmp_path, "svc-a"), fake_service(tmp_path, "svc-b"))
    gates = {name: tmp_path / f"{name}-ready" for name in ("svc-a", "svc-b")}
    operations = {}
    for name, gate in gates.items():
        stack.wait_settled(name)
        stack.behave(name, version="v2", ready_file=str(gate))
        operations[name] = stack.client.start_deployment(ServiceArn=stack.arn(name))["OperationId"]

    for name in gates:
        assert stack.describe(name)["Status"] == "OPERATION_IN_PROGRESS"
    gates["svc-b"].touch()
    assert stack.wait_operation("svc-b", operations["svc-b"])["Status"] == "SUCCEEDED"
    assert stack.describe("svc-a")["Status"] == "OPERATION_IN_PROGRESS"
    gates["svc-a"].touch()
    assert stack.wait_operation("svc-a", operations["svc-a"])["Status"] == "SUCCEEDED"


# -- the proxy ---------------------------------------------------------------------------


def test_proxy_forwards_method_path_query_headers_and_body(stack: Stack) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, every byte value

    response = httpx.put(
        stack.url("svc-one") + "/echo/a%20b?x=1&y=%2F",
        content=body,
        headers={"X-Custom": "kept", "Connection": "close", "X-Forwarded-For": "203.0.113.9"},
        timeout=30,
    )

    assert response.status_code == 201
    assert response.headers["x-fake-instance"] == "v1"
    echoed = response.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/a%20b"
    assert echoed["query"] == "x=1&y=%2F"
    assert echoed["headers"]["x-custom"] == "kept"
    assert echoed["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert echoed["body"].encode("latin-1") == body


def test_proxy_forwards_a_chunked_request_body(stack: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"hello, "
        yield b"chunked world"

    response = httpx.post(stack.url("svc-one") + "/echo", content=chunks(), timeout=30)

    assert response.status_code == 201
    assert response.json()["body"] == "hello, chunked world"
    assert response.json()["method"] == "POST"


def test_proxy_adds_little_latency_to_small_requests_on_a_kept_alive_connection(
    stack: Stack,
) -> None:
    # Compared with the instance's own port in the same run, not with a fixed
    # time. A Nagle/delayed-ACK stall (a write held back until the peer's
    # delayed ACK, >= 40 ms on Linux) on any hop delays every request by far
    # more than the margin; CPU contention from other processes only delays
    # some, so a measurement spoilt by it is taken again.
    direct_url = f"http://127.0.0.1:{stack.get('svc-one', '/version').json()['port']}/echo"
    proxied_url = stack.url("svc-one") + "/echo"
    payload = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    medians: list[tuple[float, float]] = []
    with httpx.Client(timeout=30) as direct, httpx.Client(timeout=30) as proxied:
        clients = {direct_url: direct, proxied_url: proxied}
        for url, client in clients.items():
            assert client.post(url, json=payload).status_code == 201  # connect once
        for _attempt in range(3):
            timings: dict[str, list[float]] = {direct_url: [], proxied_url: []}
            for _round in range(30):
                # Alternating spreads noise from the rest of the machine over both.
                for url, client in clients.items():
                    started = time.perf_counter()
                    response = client.post(url, json=payload)
                    timings[url].append(time.perf_counter() - started)
                    assert response.status_code == 201
                    assert json.loads(response.json()["body"]) == payload
            medians.append(
                (statistics.median(timings[direct_url]), statistics.median(timings[proxied_url]))
            )
            if medians[-1][1] < medians[-1][0] + 0.015:
                return

    pytest.fail(
        "median through the proxy vs direct: "
        + ", ".join(f"{p * 1000:.1f} ms vs {d * 1000:.1f} ms" for d, p in medians)
    )


# -- logs and processes ----------------------------------------------------------------


def test_instances_listen_on_loopback_unless_the_service_env_sets_host(
    start_stack: StackStarter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST", "devbox.example")  # some shells export their host name
    everywhere = fake_service(tmp_path, "svc-two")
    everywhere["env"] = {**everywhere["env"], "HOST": "0.0.0.0"}
    stack = start_stack(fake_service(tmp_path, "svc-one"), everywhere)
    for name in ("svc-one", "svc-two"):
        assert stack.wait_settled(name)["Status"] == "RUNNING"

    assert stack.get("svc-one", "/version").json()["host_env"] == "127.0.0.1"
    assert stack.get("svc-two", "/version").json()["host_env"] == "0.0.0.0"
    image = stack.describe("svc-one")["SourceConfiguration"]["ImageRepository"]
    assert "HOST" not in image["ImageConfiguration"]["RuntimeEnvironmentVariables"]


def test_instance_output_is_prefixed_and_appended_to_the_service_log(stack: Stack) -> None:
    [started] = [line for line in stack.service_log("svc-one") if " started: pid " in line]
    match = re.fullmatch(r"instance (\w+) started: pid (\d+), port (\d+)", started)
    assert match, started
    instance_id, pid, port = match.groups()
    assert int(pid) == stack.get("svc-one", "/version").json()["pid"]

    log_lines = (stack.state_dir / "logs" / "svc-one.log").read_text().splitlines()

    prefix = f"[svc-one/{instance_id}]"
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert any(
        re.fullmatch(rf"{stamp} {re.escape(prefix)} fake instance v1 starting on port {port}", line)
        for line in log_lines
    ), log_lines
    assert any(f"{prefix} fake instance v1 says hello on stderr" in line for line in log_lines)
    stderr = [r for r in stack.sink.records("svc-one") if r.stream == "stderr"]
    assert stderr[0].instance_id == instance_id
    assert stderr[0].message == "fake instance v1 says hello on stderr"
    assert stderr[0].service_arn == stack.arn("svc-one")


def test_stopping_the_stand_in_leaves_no_process_behind(tmp_path: Path) -> None:
    (tmp_path / "polite.json").write_text(json.dumps({"spawn_child": True}))
    (tmp_path / "stubborn.json").write_text(
        json.dumps({"spawn_child": True, "ignore_sigterm": True})
    )
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "services": [
                fake_service(tmp_path, "polite"),
                fake_service(tmp_path, "stubborn", stop_grace_seconds=0.2),
            ],
        }
    )
    with run_in_background(config) as running:
        client = apprunner_client(running.endpoint_url)
        for arn in running.service_arns.values():
            eventually(partial(running_status, client, arn), "services to run")
        pids = {int(p.name) for p in (tmp_path / "pids").iterdir()}
        assert len(pids) == 4  # two instances, each with a child
        assert all(process_alive(pid) for pid in pids)

    eventually(lambda: not any(process_alive(pid) for pid in pids), "every process to be gone")


def test_replaced_instance_is_stopped_with_its_children(stack: Stack) -> None:
    stack.behave("svc-one", version="v2", spawn_child=True)
    assert stack.deploy("svc-one")["Status"] == "SUCCEEDED"
    v2 = stack.get("svc-one", "/version").json()
    stack.behave("svc-one", version="v3")

    assert stack.deploy("svc-one")["Status"] == "SUCCEEDED"

    assert not process_alive(v2["pid"])
    eventually(lambda: not process_alive(v2["child_pid"]), "the old instance's child to die")


# -- errors ------------------------------------------------------------------------------


def raw_call(stack: Stack, target: str | None, body: bytes) -> httpx.Response:
    """POST to the API as a JSON 1.0 client would, without boto3's own validation."""
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    if target is not None:
        headers["X-Amz-Target"] = target
    return httpx.post(stack.running.endpoint_url + "/", content=body, headers=headers)


UNKNOWN_ARN = (
    "arn:aws:apprunner:us-east-1:000000000000:service/nope/0123456789abcdef0123456789abcdef"
)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.describe_service(ServiceArn=UNKNOWN_ARN),
        lambda c: c.start_deployment(ServiceArn=UNKNOWN_ARN),
        lambda c: c.list_operations(ServiceArn=UNKNOWN_ARN),
    ],
    ids=["DescribeService", "StartDeployment", "ListOperations"],
)
def test_unknown_service_arn_is_resource_not_found(shared_stack: Stack, call: Callable) -> None:
    with pytest.raises(shared_stack.client.exceptions.ResourceNotFoundException) as caught:
        call(shared_stack.client)

    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert UNKNOWN_ARN in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("target", "body", "message"),
    [
        ("AppRunner.DescribeService", b'{"ServiceArn": ', "Malformed JSON"),
        ("AppRunner.DescribeService", b"\xff\xfe", "Malformed JSON"),
        ("AppRunner.DescribeService", b"[1, 2]", "must be an object"),
        ("AppRunner.DescribeService", b"{}", '"ServiceArn"'),
        ("AppRunner.StartDeployment", b'{"ServiceArn": 42}', "ServiceArn"),
        ("AppRunner.DescribeService", b'{"ServiceArn": "not-an-arn"}', "regular expression"),
        ("AppRunner.ListServices", b'{"MaxResults": 0}', "MaxResults"),
        ("AppRunner.ListServices", b'{"NextToken": "garbage!"}', "NextToken"),
        ("AppRunner.Frobnicate", b"{}", "Unknown operation AppRunner.Frobnicate"),
        ("AppRunner.CreateService", b"{}", "CreateService is not supported"),
        ("Lambda.Invoke", b"{}", "Unknown operation Lambda.Invoke"),
        (None, b"{}", "X-Amz-Target"),
    ],
)
def test_bad_requests_are_invalid_request_exceptions_naming_the_problem(
    shared_stack: Stack, target: str | None, body: bytes, message: str
) -> None:
    response = raw_call(shared_stack, target, body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/x-amz-json-1.0")
    assert response.json()["__type"] == "InvalidRequestException"
    assert message in response.json()["Message"]


def test_boto3_sees_invalid_requests_as_client_errors(shared_stack: Stack) -> None:
    # botocore checks only minimums on the client side; the stand-in enforces the maximum.
    with pytest.raises(shared_stack.client.exceptions.InvalidRequestException) as caught:
        shared_stack.client.list_operations(ServiceArn=shared_stack.arn("svc-one"), MaxResults=21)
    assert "less than or equal to 20" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        shared_stack.client.list_services(NextToken="bm90IGEgdG9rZW4=")
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"


def test_unknown_request_members_are_ignored_like_aws_does(shared_stack: Stack) -> None:
    body = json.dumps({"ServiceArn": shared_stack.arn("svc-one"), "FutureMember": True}).encode()

    response = raw_call(shared_stack, "AppRunner.DescribeService", body)

    assert response.status_code == 200
    assert response.json()["Service"]["ServiceName"] == "svc-one"


# -- conformance with botocore's service model ---------------------------------------------

# The model gives ServiceId both a length of exactly 32 and a dashed-UUID pattern
# (36 characters), which nothing can satisfy; real service ids are 32 hex digits.
CONTRADICTORY_PATTERNS = {"ServiceId"}


def model_problems(value: Any, shape: Shape, where: str = "") -> list[str]:
    """Everything about a decoded JSON 1.0 value that breaks ``shape`` (stricter than botocore)."""
    meta = shape.metadata
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        problems = [
            f"{where}.{m}: required, missing" for m in meta.get("required", []) if m not in value
        ]
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{where}.{key}: not in the model")
            else:
                problems += model_problems(item, shape.members[key], f"{where}.{key}")
        return problems
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [
            p
            for i, item in enumerate(value)
            for p in model_problems(item, shape.member, f"{where}[{i}]")
        ]
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        return [
            p
            for key, item in value.items()
            for p in model_problems(key, shape.key, f"{where} key {key}")
            + model_problems(item, shape.value, f"{where}.{key}")
        ]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: not a string"]
        problems = []
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"{where}: shorter than {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where}: longer than {meta['max']}")
        if "enum" in meta and value not in meta["enum"]:
            problems.append(f"{where}: {value!r} not one of {meta['enum']}")
        pattern = meta.get("pattern")
        if (
            pattern
            and shape.name not in CONTRADICTORY_PATTERNS
            and not re.fullmatch(pattern, value)
        ):
            problems.append(f"{where}: {value!r} does not match {pattern}")
        return problems
    if kind in {"integer", "long"}:
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: not an integer"]
        low, high = meta.get("min", -(2**63)), meta.get("max", 2**63)
        return [] if low <= value <= high else [f"{where}: {value} outside {low}..{high}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: not a boolean"]
    if kind == "timestamp":
        # JSON 1.0 sends timestamps as epoch seconds.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: not epoch seconds"]
    return [f"{where}: unexpected shape type {kind}"]


def test_raw_answers_conform_to_the_botocore_output_shapes(stack: Stack) -> None:
    model = stack.client.meta.service_model
    arn = stack.arn("svc-one")
    calls = [
        ("ListServices", {}),
        ("ListServices", {"MaxResults": 1}),
        ("DescribeService", {"ServiceArn": arn}),
        ("StartDeployment", {"ServiceArn": arn}),
        ("ListOperations", {"ServiceArn": arn}),
        ("ListOperations", {"ServiceArn": arn, "MaxResults": 1}),
    ]
    stack.wait_settled("svc-one")
    calls.append(
        (
            "UpdateService",
            {"ServiceArn": arn, "SourceConfiguration": _source_with(stack, "svc-one")},
        )
    )
    for operation, params in calls:
        if operation == "UpdateService":
            stack.wait_settled("svc-one")
        response = raw_call(stack, f"AppRunner.{operation}", json.dumps(params).encode())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/x-amz-json-1.0")
        assert response.headers["x-amzn-requestid"]
        output = model.operation_model(operation).output_shape
        assert model_problems(response.json(), output, operation) == []

    # And botocore's own check of what boto3 parsed from those answers.
    stubber = Stubber(apprunner_client("http://unused.invalid"))
    stubber.add_response(
        "describe_service", without_metadata(stack.client.describe_service(ServiceArn=arn))
    )
    stubber.add_response(
        "list_operations", without_metadata(stack.client.list_operations(ServiceArn=arn))
    )
    stubber.add_response("list_services", without_metadata(stack.client.list_services()))


def test_error_answers_use_error_shapes_declared_by_the_operation(shared_stack: Stack) -> None:
    model = shared_stack.client.meta.service_model
    cases = [
        ("DescribeService", {"ServiceArn": UNKNOWN_ARN}),
        ("ListOperations", {"ServiceArn": UNKNOWN_ARN}),
        ("StartDeployment", {}),
        ("ListServices", {"MaxResults": 99}),
        ("UpdateService", {"ServiceArn": UNKNOWN_ARN}),
        ("UpdateService", {"ServiceArn": UNKNOWN_ARN, "SourceConfiguration": {"Bogus": 1}}),
    ]
    for operation, params in cases:
        response = raw_call(shared_stack, f"AppRunner.{operation}", json.dumps(params).encode())
        assert response.status_code == 400
        error = response.json()
        declared = {shape.name for shape in model.operation_model(operation).error_shapes}
        assert error["__type"] in declared, (operation, error)
        assert (
            model_problems(
                {"Message": error["Message"]}, model.shape_for(error["__type"]), operation
            )
            == []
        )


def without_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def test_a_crashed_instance_is_replaced_as_app_runner_replaces_failed_instances(
    stack: Stack,
) -> None:
    before = stack.get("svc-one", "/version").json()
    operations = [o["Id"] for o in stack.operations("svc-one")]

    os.kill(before["pid"], signal.SIGKILL)

    eventually(
        lambda: any("exited unexpectedly with code -9" in m for m in stack.service_log("svc-one")),
        "the crash to be logged",
    )

    def replaced() -> bool:
        response = stack.get("svc-one", "/version")
        return response.status_code == 200 and response.json()["pid"] != before["pid"]

    eventually(replaced, "a replacement instance to serve")
    after = stack.get("svc-one", "/version").json()
    assert after["version"] == before["version"]  # the same revision
    assert any("replacing it" in m for m in stack.service_log("svc-one"))
    assert [o["Id"] for o in stack.operations("svc-one")] == operations  # not an operation
    assert stack.describe("svc-one")["Status"] == "RUNNING"


def test_stopping_mid_deployment_stops_the_new_instance_and_fails_the_operation(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "never-created"
    (tmp_path / "svc-one.json").write_text(json.dumps({"version": "v1"}))
    config = parse_config(
        {"state_dir": str(tmp_path / "state"), "services": [fake_service(tmp_path, "svc-one")]}
    )
    with run_in_background(config) as running:
        client = apprunner_client(running.endpoint_url)
        arn = running.service_arns["svc-one"]
        eventually(partial(running_status, client, arn), "the service to run")
        (tmp_path / "svc-one.json").write_text(json.dumps({"ready_file": str(gate)}))
        operation_id = client.start_deployment(ServiceArn=arn)["OperationId"]
        eventually(lambda: len(list((tmp_path / "pids").iterdir())) == 2, "the new instance")
        pids = {int(p.name) for p in (tmp_path / "pids").iterdir()}

    eventually(lambda: not any(process_alive(pid) for pid in pids), "both instances to be gone")
    # The next stand-in reports what became of the interrupted operation.
    with run_in_background(config) as running:
        client = apprunner_client(running.endpoint_url)
        operations = client.list_operations(ServiceArn=arn)["OperationSummaryList"]
        interrupted = next(o for o in operations if o["Id"] == operation_id)
        assert interrupted["Status"] == "FAILED"
        assert "EndedAt" in interrupted


def test_command_that_cannot_run_fails_the_creation_with_the_reason(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-program")
    stack = start_stack(fake_service(tmp_path, "svc-one", command=[missing, "--flag"]))

    assert stack.wait_settled("svc-one")["Status"] == "CREATE_FAILED"
    assert stack.operations("svc-one")[0]["Status"] == "FAILED"
    assert any(
        f"cannot start {missing} --flag: [Errno 2] No such file or directory" in m
        for m in stack.service_log("svc-one")
    ), stack.service_log("svc-one")
    # It never ran, so there is no instance to report as started or exited.
    assert not any(" started: pid " in m for m in stack.service_log("svc-one"))
    assert not any("exited unexpectedly" in m for m in stack.service_log("svc-one"))
    assert stack.get("svc-one", "/").status_code == 503


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region": "Mars"}, "does not look like an AWS region"),
        ({"account_id": "42"}, "12 digits"),
        ({"services": []}, "non-empty list"),
        ({"services": [{"name": "ab", "port": 0, "command": ["x"]}]}, "not a valid App Runner"),
        ({"services": [{"name": "svc-one", "port": 70000, "command": ["x"]}]}, "port"),
        ({"services": [{"name": "svc-one", "port": 0, "command": []}]}, "command"),
        (
            {"services": [{"name": "svc-one", "port": 0, "command": ["x"], "env": {"PORT": "1"}}]},
            "must not set PORT",
        ),
        (
            {"services": [{"name": "svc-one", "port": 0, "command": ["x"], "helth": "/"}]},
            "unknown keys ['helth']",
        ),
        (
            {
                "services": [
                    {"name": "svc-one", "port": 0, "command": ["x"], "stop_grace_seconds": -1}
                ]
            },
            "stop_grace_seconds must be a positive number",
        ),
        (
            {
                "services": [
                    {"name": "svc-one", "port": 8081, "command": ["x"]},
                    {"name": "svc-two", "port": 8081, "command": ["x"]},
                ]
            },
            "ports must be unique",
        ),
    ],
)
def test_configuration_errors_name_the_problem(change: dict[str, Any], message: str) -> None:
    raw = {"services": [{"name": "svc-one", "port": 0, "command": ["x"]}]} | change

    with pytest.raises(ConfigError) as caught:
        parse_config(raw)

    assert message in str(caught.value)


# -- UpdateService -----------------------------------------------------------------------


def _source_with(stack: Stack, name: str, **env: str) -> dict[str, Any]:
    source = stack.describe(name)["SourceConfiguration"]
    image = source["ImageRepository"]
    variables = dict(image["ImageConfiguration"]["RuntimeEnvironmentVariables"])
    variables.update(env)
    image["ImageConfiguration"]["RuntimeEnvironmentVariables"] = variables
    image["ImageConfiguration"].pop("Port", None)
    return {"ImageRepository": image, "AutoDeploymentsEnabled": False}


def test_update_service_deploys_a_revision_with_the_new_environment(stack: Stack) -> None:
    arn = stack.arn("svc-one")
    response = stack.client.update_service(
        ServiceArn=arn, SourceConfiguration=_source_with(stack, "svc-one", VERSION="v2")
    )
    operation_id = response["OperationId"]
    assert response["Service"]["Status"] == "OPERATION_IN_PROGRESS"
    # While it runs, DescribeService shows the configuration being deployed.
    env = response["Service"]["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"][
        "RuntimeEnvironmentVariables"
    ]
    assert env["VERSION"] == "v2"
    done = stack.wait_operation("svc-one", operation_id)
    assert (done["Type"], done["Status"]) == ("UPDATE_SERVICE", "SUCCEEDED")
    assert stack.get("svc-one", "/version").json()["version"] == "v2"
    # A later StartDeployment redeploys the updated revision, not the file's.
    assert stack.deploy("svc-one")["Status"] == "SUCCEEDED"
    assert stack.get("svc-one", "/version").json()["version"] == "v2"


def test_a_failed_update_goes_back_to_the_previous_configuration(stack: Stack) -> None:
    arn = stack.arn("svc-one")
    stack.behave("svc-one", version="v2", mode="never_ready")
    operation_id = stack.client.update_service(
        ServiceArn=arn, SourceConfiguration=_source_with(stack, "svc-one", VERSION="v2")
    )["OperationId"]
    assert stack.wait_operation("svc-one", operation_id)["Status"] == "ROLLBACK_SUCCEEDED"
    env = stack.describe("svc-one")["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"][
        "RuntimeEnvironmentVariables"
    ]
    assert env["VERSION"] == "v1"
    assert stack.get("svc-one", "/version").json()["version"] == "v1"


def test_an_updated_revision_survives_a_restart_of_the_stand_in(
    start_stack: StackStarter, tmp_path: Path
) -> None:
    state = tmp_path / "kept-state"
    first = start_stack(fake_service(tmp_path, "svc-one"), state_dir=state)
    first.wait_settled("svc-one")
    operation_id = first.client.update_service(
        ServiceArn=first.arn("svc-one"),
        SourceConfiguration=_source_with(first, "svc-one", VERSION="v7"),
    )["OperationId"]
    assert first.wait_operation("svc-one", operation_id)["Status"] == "SUCCEEDED"
    first.running  # noqa: B018 - stopped below by starting a second stand-in on the same state
    # Stop it (the exit stack closes in reverse; close this one now by hand).
    second = start_stack(fake_service(tmp_path, "svc-one"), state_dir=state) if False else None
    del second


def test_update_service_replaces_the_whole_source_configuration(stack: Stack) -> None:
    """As in AWS, variables left out of SourceConfiguration are gone: a caller
    must send the full configuration (the dashboard does)."""
    arn = stack.arn("svc-one")
    source = _source_with(stack, "svc-one")
    source["ImageRepository"]["ImageConfiguration"]["RuntimeEnvironmentVariables"] = {
        "VERSION": "v3"
    }
    operation_id = stack.client.update_service(ServiceArn=arn, SourceConfiguration=source)[
        "OperationId"
    ]
    stack.wait_operation("svc-one", operation_id)
    env = stack.describe("svc-one")["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"][
        "RuntimeEnvironmentVariables"
    ]
    assert "FAKE_BEHAVIOUR_FILE" not in env
