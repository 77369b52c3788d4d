"""The embedded AWS keeps S3 objects (with their version ids) and SSM
parameters (with their history) across a restart when given a state file:
what lets the local stack stop and start mid-deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from tests.conftest import free_port


def start(port: int, state: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.embedded_aws",
            "--port",
            str(port),
            "--state-file",
            str(state),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if "Embedded AWS ready" in line:
            return process
        assert time.monotonic() < deadline
    raise AssertionError(f"the embedded AWS did not start (exit {process.wait()})")


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def clients(port: int) -> tuple[object, object]:
    kwargs = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "config": Config(s3={"addressing_style": "path"}),
    }
    return boto3.client("s3", **kwargs), boto3.client("ssm", **kwargs)


def test_s3_and_ssm_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "aws-state.pickle"
    port = free_port()
    first = start(port, state)
    try:
        s3, ssm = clients(port)
        s3.create_bucket(Bucket="models")  # type: ignore[attr-defined]
        s3.put_bucket_versioning(  # type: ignore[attr-defined]
            Bucket="models", VersioningConfiguration={"Status": "Enabled"}
        )
        old = s3.put_object(Bucket="models", Key="m/a.pt", Body=b"one")["VersionId"]  # type: ignore[attr-defined]
        s3.put_object(Bucket="models", Key="m/a.pt", Body=b"two")  # type: ignore[attr-defined]
        ssm.put_parameter(Name="/models/iris/prod", Value="v1", Type="String")  # type: ignore[attr-defined]
        ssm.put_parameter(  # type: ignore[attr-defined]
            Name="/models/iris/prod", Value="v2", Type="String", Overwrite=True
        )
    finally:
        stop(first)
    assert state.stat().st_mode & 0o777 == 0o600
    second = start(port, state)
    try:
        s3, ssm = clients(port)
        body = s3.get_object(Bucket="models", Key="m/a.pt", VersionId=old)["Body"].read()  # type: ignore[attr-defined]
        assert body == b"one"
        assert ssm.get_parameter(Name="/models/iris/prod:1")["Parameter"]["Value"] == "v1"  # type: ignore[attr-defined]
        assert (
            ssm.put_parameter(  # type: ignore[attr-defined]
                Name="/models/iris/prod", Value="v3", Type="String", Overwrite=True
            )["Version"]
            == 3
        )
    finally:
        stop(second)


def test_an_unreadable_state_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    state = tmp_path / "aws-state.pickle"
    state.write_bytes(b"not a pickle")
    port = free_port()
    process = start(port, state)
    stop(process)
    assert state.read_bytes() != b"not a pickle"  # replaced by a good one on stop


def test_no_state_file_starts_empty(tmp_path: Path) -> None:
    port = free_port()
    process = start(port, tmp_path / "none.pickle")
    try:
        s3, _ = clients(port)
        assert s3.list_buckets()["Buckets"] == []  # type: ignore[attr-defined]
    finally:
        stop(process)
