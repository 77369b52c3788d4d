"""The light instance (devstack/apprunner/light_instance.py) the deployments
benchmark runs: it reads the pinned pointer from the embedded SSM as the
inference service does (a signed GetParameter, SSM's version selector
honoured) and reports it on /version; a pin SSM does not know never gets ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import httpx
import pytest

from tests.conftest import free_port

LIGHT = Path(__file__).resolve().parents[2] / "devstack" / "apprunner" / "light_instance.py"
PATIENCE_SECONDS = 30.0  # a safety net against hanging, not a performance bound


def pointer(version: str, sha: str) -> str:
    return json.dumps(
        {"schema": 1, "model": "iris", "version": version, "sha256": sha, "format": "torchscript"}
    )


@contextmanager
def light(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODEL_"))}
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(LIGHT)],
        env={**base, **env, "PORT": str(port), "HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the light instance never listened"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def settled(url: str) -> httpx.Response:
    """/readyz once it no longer says it is resolving the pointer."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        response = httpx.get(url + "/readyz", timeout=2)
        if response.status_code == 200 or response.json().get("status") != "resolving":
            return response
        assert time.monotonic() < deadline, "the pointer was never resolved"
        time.sleep(0.05)


@pytest.fixture
def parameter(moto_server: str) -> str:
    ssm = boto3.client(
        "ssm",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    name = f"/models/iris/light-{time.monotonic_ns()}"
    for version, sha in (("v1", "a" * 64), ("v2", "B" * 64)):
        ssm.put_parameter(Name=name, Value=pointer(version, sha), Type="String", Overwrite=True)
    return name


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


def test_reads_the_pinned_pointer_version(moto_server: str, parameter: str) -> None:
    with light({**aws_env(moto_server), "MODEL_SSM_PARAMETER": f"{parameter}:1"}) as url:
        assert settled(url).status_code == 200
        body = httpx.get(url + "/version").json()
    assert (body["model"], body["version"], body["sha256"]) == ("iris", "v1", "a" * 64)


def test_without_a_selector_reads_the_newest_and_lowercases_the_sha(
    moto_server: str, parameter: str
) -> None:
    with light({**aws_env(moto_server), "MODEL_SSM_PARAMETER": parameter}) as url:
        assert settled(url).status_code == 200
        body = httpx.get(url + "/version").json()
    assert (body["version"], body["sha256"]) == ("v2", "b" * 64)


def test_a_version_ssm_does_not_have_never_gets_ready(moto_server: str, parameter: str) -> None:
    with light({**aws_env(moto_server), "MODEL_SSM_PARAMETER": f"{parameter}:9"}) as url:
        response = settled(url)
        version = httpx.get(url + "/version")
    assert response.status_code == 503
    assert "ParameterVersionNotFound" in response.json()["detail"]
    assert version.status_code == 503


def test_model_pointer_wins_and_a_malformed_one_is_refused() -> None:
    with light({"MODEL_POINTER": pointer("inline", "c" * 64)}) as url:
        assert settled(url).status_code == 200
        assert httpx.get(url + "/version").json()["version"] == "inline"
    with light({"MODEL_POINTER": json.dumps({"schema": 1, "version": "x"})}) as url:
        response = settled(url)
    assert response.status_code == 503
    assert "no SHA-256" in response.json()["detail"]
