"""`python -m inference` as a real process against moto's server: ready, predict, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.inference.conftest import pointer_for

REPO = Path(__file__).resolve().parents[2]
BUCKET = "modeldeck-process-test"
PARAMETER = "/models/probe/process-test"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_serves_from_ssm_pointer_and_exits_cleanly_on_sigterm(moto_endpoint, artifacts, tmp_path):
    artifact = artifacts["probe"]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    ssm = boto3.client("ssm", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = "models/probe/1/model.pt"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=artifact.data)
    pointer = pointer_for(
        artifact, key=key, s3_version_id=put["VersionId"], model="probe", version="1"
    )
    pointer["bucket"] = BUCKET
    ssm.put_parameter(Name=PARAMETER, Value=json.dumps(pointer), Type="String")

    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODEL_", "INFERENCE_", "AWS_", "BATCH"))
    }
    env.update(
        MODEL_SSM_PARAMETER=PARAMETER,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PORT=str(port),
        HOST="127.0.0.1",
        MODEL_CACHE_DIR=str(tmp_path / "cache"),
        TORCH_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
        EMF_DIMENSIONS="Environment=process-test",
        SWITCH_INTERVAL_MS="2",
    )
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            ready = wait_ready(http, process, log_path)
            assert ready.json()["version"] == "1"
            answer = http.post("/predict", json={"inputs": [[0, 1.5], [0, 2]]})
            assert answer.status_code == 200
            assert answer.json() == {
                "model": "probe",
                "version": "1",
                "outputs": [[0.0, 3.0], [0.0, 4.0]],
            }

            # SIGTERM while a slow prediction is running: it still gets its answer.
            slow_result: dict = {}
            slow = threading.Thread(
                target=lambda: slow_result.update(
                    response=http.post("/predict", json={"inputs": [[15000, 1]]})
                )
            )
            slow.start()
            wait_busy(http)
            process.send_signal(signal.SIGTERM)
            slow.join(timeout=120)
            assert slow_result["response"].status_code == 200
            assert slow_result["response"].json()["outputs"] == [[30000.0, 2.0]]
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    events = [line.get("event") for line in lines]
    phases = {line["phase"]: line for line in lines if line.get("event") == "startup_phase"}
    assert {"resolve", "download", "verify", "load", "warmup"} <= set(phases)
    assert phases["download"]["bytes"] == artifact.size
    assert all(phase["duration_s"] >= 0 for phase in phases.values())
    assert "startup_ready" in events
    [start] = [line for line in lines if line.get("event") == "service_start"]
    assert start["switch_interval_ms"] == 2.0
    requests = [line for line in lines if line.get("event") == "request"]
    assert {(r["method"], r["path"], r["status"]) for r in requests} >= {("POST", "/predict", 200)}
    assert {r["version"] for r in requests if r["path"] == "/predict"} == {"1"}
    assert not [line for line in lines if line.get("level") == "ERROR"]
    # The metrics, as EMF lines on the same stdout: the load time once, then the
    # predictions (the window left at SIGTERM is written on the way out).
    emf = [line for line in lines if "_aws" in line]
    assert all(
        (line["Environment"], line["Model"], line["Version"]) == ("process-test", "probe", "1")
        for line in emf
    )
    assert len([line for line in emf if "ModelLoadTime" in line]) == 1
    assert sum(line.get("Predictions", 0) for line in emf) == 3


def wait_ready(http: httpx.Client, process: subprocess.Popen, log_path: Path) -> httpx.Response:
    health_seen = False
    for _ in range(6000):
        if process.poll() is not None:
            pytest.fail(f"service exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            health = http.get("/healthz")
            health_seen = health_seen or health.status_code == 200
            ready = http.get("/readyz")
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if ready.status_code == 200:
            assert health_seen
            return ready
        assert ready.json()["status"] != "failed", ready.json()
        time.sleep(0.05)
    pytest.fail(f"service never became ready:\n{log_path.read_text()}")


def wait_busy(http: httpx.Client) -> None:
    for _ in range(6000):
        if "inference_forward_in_progress 1.0" in http.get("/metrics").text:
            return
        time.sleep(0.01)
    pytest.fail("the slow prediction never started")


def test_bad_configuration_exits_with_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "INFERENCE_"))}
    env.update(MODEL_SSM_PARAMETER="/x", PORT="not-a-port", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "inference"], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 2
    [line] = [json.loads(x) for x in result.stdout.decode().splitlines() if x.strip()]
    assert line["level"] == "ERROR"
    assert "PORT: Input should be a valid integer" in line["msg"]
