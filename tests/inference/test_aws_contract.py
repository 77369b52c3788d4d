"""Contract tests: every AWS call the inference service makes, checked by botocore's
Stubber against AWS's own service models (operation and parameter names, types,
required members), which moto does not enforce.

The service makes exactly two kinds of call (``inference/aws.py`` and
``inference/download.py``): ``ssm:GetParameter`` of the pointer (with
decryption, the name possibly carrying a version selector) and ranged
``s3:GetObject`` of the pinned object version. The clients are the ones the
service's own factories build; the startup runs for real against them, so each
AWS error is checked all the way to the reason ``/readyz`` gives.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from inference.aws import RetryPolicy, read_parameter, s3_client, ssm_client
from inference.download import download_object, plan_parts
from inference.errors import StartupFailure
from inference.metrics import Metrics
from inference.pointer import parse_pointer
from inference.startup import Startup
from inference.state import LoadedModel, ModelState, Phase
from tests.inference.conftest import BUCKET, pointer_for
from tests.inference.models import Artifact

PARAMETER = "/models/iris/production"
PINNED = f"{PARAMETER}:7"  # SSM's version selector: exactly revision 7 of the pointer
VERSION_ID = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
NOW = dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.UTC)


@pytest.fixture
def artifact(artifacts: dict[str, Artifact]) -> Artifact:
    return artifacts["affine"]


@pytest.fixture
def pointer(artifact: Artifact) -> dict[str, Any]:
    return pointer_for(
        artifact, key="models/iris/1.0/model.pt", s3_version_id=VERSION_ID, model="iris"
    )


@pytest.fixture
def clients(make_settings) -> Iterator[tuple[Any, Stubber, Any, Stubber]]:
    """The service's own SSM and S3 clients, each with an active Stubber."""
    settings = make_settings(model_ssm_parameter=PINNED)
    ssm, s3 = ssm_client(settings), s3_client(settings)
    with Stubber(ssm) as ssm_stub, Stubber(s3) as s3_stub:
        yield ssm, ssm_stub, s3, s3_stub
        ssm_stub.assert_no_pending_responses()
        s3_stub.assert_no_pending_responses()


def parameter_answer(pointer: dict[str, Any], version: int = 7) -> dict[str, Any]:
    return {
        "Parameter": {
            "Name": PARAMETER,
            "Type": "String",
            "Value": json.dumps(pointer),
            "Version": version,
            "Selector": f":{version}",
            "LastModifiedDate": NOW,
            "ARN": f"arn:aws:ssm:us-east-1:123456789012:parameter{PARAMETER}",
            "DataType": "text",
        }
    }


def object_answer(data: bytes, start: int, end: int, total: int) -> dict[str, Any]:
    part = data[start : end + 1]
    return {
        "Body": StreamingBody(io.BytesIO(part), len(part)),
        "ContentLength": len(part),
        "ContentRange": f"bytes {start}-{end}/{total}",
        "AcceptRanges": "bytes",
        "VersionId": VERSION_ID,
        "ETag": '"0123456789abcdef0123456789abcdef"',
        "LastModified": NOW,
    }


def get_params(pointer: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    return {
        "Bucket": BUCKET,
        "Key": pointer["key"],
        "VersionId": VERSION_ID,
        "Range": f"bytes={start}-{end}",
    }


def run_startup(make_settings, ssm: Any, s3: Any, **overrides: Any) -> ModelState:
    state = ModelState()
    loaded: list[LoadedModel] = []
    settings = make_settings(
        model_ssm_parameter=PINNED,
        download_part_size=64 * 1024,
        download_concurrency=1,
        **overrides,
    )
    startup = Startup(settings, state, Metrics(), on_ready=loaded.append, ssm=ssm, s3=s3)
    startup.run()
    if loaded:
        state.ready(loaded[0])
    return state


def policy(attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_seconds=0, max_seconds=0, stop=threading.Event())


# --- Success ---------------------------------------------------------------------------


def test_pinned_parameter_then_ranged_get_of_the_pinned_version(
    make_settings, clients, artifact, pointer
) -> None:
    ssm, ssm_stub, s3, s3_stub = clients
    ssm_stub.add_response(
        "get_parameter", parameter_answer(pointer), {"Name": PINNED, "WithDecryption": True}
    )
    size = artifact.size
    s3_stub.add_response(
        "get_object",
        object_answer(artifact.data, 0, size - 1, size),
        get_params(pointer, 0, size - 1),
    )
    state = run_startup(make_settings, ssm, s3)
    assert state.status.phase is Phase.READY, state.status
    assert state.model is not None and state.model.pointer.s3_version_id == VERSION_ID


def test_download_asks_for_each_range_of_the_pinned_version(
    clients, artifact, pointer, tmp_path
) -> None:
    _, _, s3, s3_stub = clients
    part_size = artifact.size // 3 + 1
    parts = plan_parts(artifact.size, part_size)
    assert len(parts) == 3
    for part in parts:
        s3_stub.add_response(
            "get_object",
            object_answer(artifact.data, part.start, part.end, artifact.size),
            get_params(pointer, part.start, part.end),
        )
    target = tmp_path / "artifact"
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        digest = download_object(
            s3,
            parse_pointer(json.dumps(pointer), source="test"),
            fd,
            part_size=part_size,
            concurrency=1,
            policy=policy(),
        )
    finally:
        os.close(fd)
    assert digest == artifact.sha256
    assert target.read_bytes() == artifact.data


def test_secure_string_pointer_is_read_decrypted(clients, pointer) -> None:
    ssm, ssm_stub, _, _ = clients
    answer = parameter_answer(pointer)
    answer["Parameter"]["Type"] = "SecureString"
    ssm_stub.add_response("get_parameter", answer, {"Name": PINNED, "WithDecryption": True})
    assert json.loads(read_parameter(ssm, PINNED, policy())) == pointer


def test_throttling_is_retried_then_succeeds(clients, pointer) -> None:
    ssm, ssm_stub, _, _ = clients
    expected = {"Name": PINNED, "WithDecryption": True}
    ssm_stub.add_client_error(
        "get_parameter", "ThrottlingException", "Rate exceeded", 400, expected_params=expected
    )
    ssm_stub.add_response("get_parameter", parameter_answer(pointer), expected)
    assert json.loads(read_parameter(ssm, PINNED, policy()))["s3_version_id"] == VERSION_ID


def test_throttling_that_persists_is_a_clear_failure(clients) -> None:
    ssm, ssm_stub, _, _ = clients
    for _ in range(2):
        ssm_stub.add_client_error(
            "get_parameter",
            "ThrottlingException",
            "Rate exceeded",
            400,
            expected_params={"Name": PINNED, "WithDecryption": True},
        )
    with pytest.raises(StartupFailure) as failure:
        read_parameter(ssm, PINNED, policy(attempts=2))
    assert failure.value.cause == "aws_unavailable"
    assert "gave up after 2 attempts" in failure.value.message


# --- SSM errors: startup fails with the cause and a readable reason ------------------------


@pytest.mark.parametrize(
    ("code", "status", "message", "cause"),
    [
        ("ParameterNotFound", 400, "", "parameter_not_found"),
        ("ParameterVersionNotFound", 400, "Version 7 not found", "parameter_not_found"),
        (
            "AccessDeniedException",
            400,
            "User: arn:aws:sts::123456789012:assumed-role/r/i is not authorized to perform: "
            "ssm:GetParameter",
            "access_denied",
        ),
        ("InvalidKeyId", 400, "The KMS key is disabled", "kms_key_invalid"),
    ],
)
def test_parameter_errors_stop_startup_with_the_reason(
    make_settings, clients, code, status, message, cause
) -> None:
    ssm, ssm_stub, s3, _ = clients
    ssm_stub.add_client_error(
        "get_parameter",
        code,
        message,
        status,
        expected_params={"Name": PINNED, "WithDecryption": True},
    )
    state = run_startup(make_settings, ssm, s3)
    assert state.status.phase is Phase.FAILED
    assert state.status.cause == cause
    assert state.status.detail.startswith(f"reading SSM parameter {PINNED}: {code}")


def test_parameter_that_is_not_a_pointer_stops_startup(make_settings, clients, pointer) -> None:
    ssm, ssm_stub, s3, _ = clients
    answer = parameter_answer(pointer)
    answer["Parameter"]["Value"] = '{"schema": 1, "model": "iris"}'
    ssm_stub.add_response("get_parameter", answer, {"Name": PINNED, "WithDecryption": True})
    state = run_startup(make_settings, ssm, s3)
    assert state.status.cause == "pointer_invalid"
    assert f"malformed model pointer from SSM parameter {PINNED}" in state.status.detail


# --- S3 errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "cause", "says"),
    [
        ("NoSuchVersion", 404, "object_not_found", "NoSuchVersion"),
        ("NoSuchKey", 404, "object_not_found", "NoSuchKey"),
        ("NoSuchBucket", 404, "object_not_found", "NoSuchBucket"),
        ("AccessDenied", 403, "access_denied", "AccessDenied"),
        ("MethodNotAllowed", 405, "object_not_found", "is a delete marker"),
        ("InvalidObjectState", 403, "object_archived", "restore the object"),
        ("InvalidRange", 416, "size_mismatch", "shorter than the pointer's size"),
    ],
)
def test_object_errors_stop_startup_with_the_reason(
    make_settings, clients, artifact, pointer, code, status, cause, says
) -> None:
    ssm, ssm_stub, s3, s3_stub = clients
    ssm_stub.add_response(
        "get_parameter", parameter_answer(pointer), {"Name": PINNED, "WithDecryption": True}
    )
    s3_stub.add_client_error(
        "get_object",
        code,
        "refused",
        status,
        expected_params=get_params(pointer, 0, artifact.size - 1),
    )
    state = run_startup(make_settings, ssm, s3)
    assert state.status.phase is Phase.FAILED
    assert state.status.cause == cause
    where = f"s3://{BUCKET}/{pointer['key']} version {VERSION_ID}"
    assert where in state.status.detail and says in state.status.detail


def test_object_longer_than_the_pointer_says_stops_at_the_first_part(
    make_settings, clients, artifact, pointer
) -> None:
    ssm, ssm_stub, s3, s3_stub = clients
    ssm_stub.add_response(
        "get_parameter", parameter_answer(pointer), {"Name": PINNED, "WithDecryption": True}
    )
    size = artifact.size
    s3_stub.add_response(
        "get_object",
        object_answer(artifact.data, 0, size - 1, size + 100),
        get_params(pointer, 0, size - 1),
    )
    state = run_startup(make_settings, ssm, s3)
    assert state.status.cause == "size_mismatch"
    assert f"is {size + 100} bytes but the pointer says {size}" in state.status.detail


def test_s3_server_errors_are_retried(make_settings, clients, artifact, pointer) -> None:
    ssm, ssm_stub, s3, s3_stub = clients
    ssm_stub.add_response(
        "get_parameter", parameter_answer(pointer), {"Name": PINNED, "WithDecryption": True}
    )
    size = artifact.size
    params = get_params(pointer, 0, size - 1)
    s3_stub.add_client_error("get_object", "SlowDown", "Reduce your request rate", 503, params)
    s3_stub.add_response("get_object", object_answer(artifact.data, 0, size - 1, size), params)
    state = run_startup(make_settings, ssm, s3)
    assert state.status.phase is Phase.READY, state.status
