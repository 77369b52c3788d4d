"""The embedded AWS: moto's server on a thread, and the models bucket bootstrap."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.embedded_aws import (
    EmbeddedAws,
    PortInUseError,
    bootstrap,
    start_moto_server,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def aws() -> Iterator[EmbeddedAws]:
    with start_moto_server(port=0) as server:
        yield server


def plain_s3(endpoint_url: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def unique_bucket() -> str:
    return f"models-{uuid.uuid4().hex[:12]}"


def test_bootstrap_twice_gives_the_contract_bucket(aws: EmbeddedAws) -> None:
    bucket = unique_bucket()
    for _ in range(2):
        bootstrap(
            endpoint_url=aws.endpoint_url,
            region="us-east-1",
            bucket=bucket,
            cors_origins=[DASHBOARD_ORIGIN],
        )
    s3 = plain_s3(aws.endpoint_url)

    assert [b["Name"] for b in s3.list_buckets()["Buckets"]].count(bucket) == 1
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in sse["Rules"]] == [
        "AES256"
    ]

    (cors,) = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert cors["AllowedOrigins"] == [DASHBOARD_ORIGIN]
    assert sorted(cors["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]
    assert cors["AllowedHeaders"] == ["*"]
    assert cors["ExposeHeaders"] == ["ETag"]
    assert cors["MaxAgeSeconds"] == 3000

    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert rule["Filter"] == {"Prefix": ""}  # the whole bucket


def test_bootstrap_again_keeps_objects_and_versions(aws: EmbeddedAws) -> None:
    bucket = unique_bucket()
    kwargs: dict[str, Any] = {
        "endpoint_url": aws.endpoint_url,
        "region": "us-east-1",
        "bucket": bucket,
        "cors_origins": [DASHBOARD_ORIGIN],
    }
    bootstrap(**kwargs)
    s3 = plain_s3(aws.endpoint_url)
    first = s3.put_object(Bucket=bucket, Key="models/iris/1/model.pt", Body=b"one")
    s3.put_object(Bucket=bucket, Key="models/iris/1/model.pt", Body=b"two")

    bootstrap(**kwargs)

    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert len(versions) == 2
    old = s3.get_object(Bucket=bucket, Key="models/iris/1/model.pt", VersionId=first["VersionId"])
    assert old["Body"].read() == b"one"
    assert old["ServerSideEncryption"] == "AES256"


def test_bootstrap_outside_us_east_1(aws: EmbeddedAws) -> None:
    bucket = unique_bucket()
    for _ in range(2):
        bootstrap(
            endpoint_url=aws.endpoint_url,
            region="eu-west-1",
            bucket=bucket,
            cors_origins=[DASHBOARD_ORIGIN],
        )
    s3 = plain_s3(aws.endpoint_url, region="eu-west-1")
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"


def preflight(url: str, origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_browser_preflight_is_allowed_only_from_the_dashboard(aws: EmbeddedAws) -> None:
    bucket = unique_bucket()
    bootstrap(
        endpoint_url=aws.endpoint_url,
        region="us-east-1",
        bucket=bucket,
        cors_origins=[DASHBOARD_ORIGIN],
    )
    url = f"{aws.endpoint_url}/{bucket}/models/iris/1/model.pt"

    status, headers = preflight(url, DASHBOARD_ORIGIN)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Expose-Headers"] == "ETag"

    # A browser fails a preflight on any non-2xx status. (moto still echoes the
    # origin header on this 403, which real S3 does not; the status is what counts.)
    status, _ = preflight(url, "http://evil.example")
    assert status == 403


def test_bootstrap_refuses_an_empty_origin_list(aws: EmbeddedAws) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        bootstrap(
            endpoint_url=aws.endpoint_url,
            region="us-east-1",
            bucket=unique_bucket(),
            cors_origins=[],
        )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_start_on_a_taken_port_fails_clearly(taken_port: int) -> None:
    with pytest.raises(PortInUseError, match=f"127.0.0.1:{taken_port}.*in use"):
        start_moto_server(port=taken_port)


def test_stop_releases_the_port() -> None:
    server = start_moto_server(port=0)
    port = server.port
    s3 = plain_s3(server.endpoint_url)
    assert s3.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    server.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devstack.embedded_aws", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_serves_until_sigterm_then_exits_cleanly() -> None:
    bucket = unique_bucket()
    process = run_cli("--port", "0", "--bucket", bucket, "--cors-origin", DASHBOARD_ORIGIN)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Embedded AWS ready at http://127.0.0.1:"), line
        endpoint_url = line.rsplit(" ", 1)[1].strip()
        s3 = plain_s3(endpoint_url)
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_cli_on_a_taken_port_exits_with_a_message(taken_port: int) -> None:
    process = run_cli("--port", str(taken_port))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"127.0.0.1:{taken_port}" in stderr
    assert "in use" in stderr
    assert "ready" not in stdout
