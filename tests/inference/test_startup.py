"""Startup against moto S3/SSM: pointer resolution, download, verification, cache, failures."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import threading
import time
import zipfile

import pytest

from inference.aws import RetryPolicy
from inference.bake import bake
from inference.bake import main as bake_main
from inference.download import download_object, plan_parts
from inference.pointer import parse_pointer
from tests.inference.conftest import BUCKET, pointer_for, seed_cache, serving
from tests.inference.models import Artifact

PARAMETER = "/models/demo/test"
ROW = {"inputs": [[1, 2, 3, 4]]}


def errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_ready_from_ssm_parameter(aws, artifacts, make_settings):
    pointer = aws.upload(artifacts["affine"], version="2026.11.3")
    aws.put_pointer(PARAMETER, pointer)
    with serving(make_settings(model_ssm_parameter=PARAMETER)) as client:
        version = client.get("/version").json()
        prediction = client.post("/predict", json=ROW)
    assert version["version"] == "2026.11.3"
    assert version["sha256"] == artifacts["affine"].sha256
    assert prediction.status_code == 200


def test_model_pointer_wins_over_ssm(aws, artifacts, make_settings):
    pointer = aws.upload(artifacts["affine"], version="from-env")
    # The parameter does not exist: reading it would fail startup.
    settings = make_settings(pointer, model_ssm_parameter="/models/demo/absent")
    with serving(settings) as client:
        assert client.get("/version").json()["version"] == "from-env"


def test_ssm_wins_over_pointer_file(aws, artifacts, make_settings, tmp_path):
    baked = aws.upload(artifacts["affine"], version="baked")
    promoted = aws.upload(artifacts["affine_export"], version="promoted")
    aws.put_pointer(PARAMETER, promoted)
    pointer_file = tmp_path / "pointer.json"
    pointer_file.write_text(json.dumps(baked))
    settings = make_settings(model_ssm_parameter=PARAMETER, model_pointer_file=pointer_file)
    with serving(settings) as client:
        assert client.get("/version").json()["version"] == "promoted"


def test_baked_model_needs_no_aws(artifacts, make_settings, tmp_path, s3_requests):
    """The Docker BAKED_MODEL layout (inference.bake): a pointer file and a filled cache."""
    artifact = artifacts["affine"]
    source = tmp_path / "model-src"
    source.mkdir()
    (source / "model.pt").write_bytes(artifact.data)
    pointer = pointer_for(artifact, key="models/demo/1.0/model.pt", s3_version_id="v")
    (source / "pointer.json").write_text(json.dumps(pointer))
    baked = tmp_path / "baked"
    assert bake_main([str(source), str(baked)]) == 0
    settings = make_settings(
        model_pointer_file=baked / "pointer.json",
        model_cache_dir=baked / "cache",
        aws_endpoint_url="http://127.0.0.1:9",  # nothing listens there
    )
    with serving(settings) as client:
        assert client.post("/predict", json=ROW).status_code == 200
    assert s3_requests.calls == []


def test_bake_refuses_an_artifact_that_does_not_match(artifacts, tmp_path):
    artifact = artifacts["affine"]
    source = tmp_path / "model-src"
    source.mkdir()
    (source / "model.pt").write_bytes(artifact.data[:-1] + b"!")
    pointer = pointer_for(artifact, key="models/demo/1.0/model.pt", s3_version_id="v")
    (source / "pointer.json").write_text(json.dumps(pointer))
    with pytest.raises(ValueError, match="has SHA-256 .* the pointer says"):
        bake(source, tmp_path / "baked")
    assert not (tmp_path / "baked").exists()


def garbage(tmp_path, name="garbage.pt") -> Artifact:
    path = tmp_path / name
    path.write_bytes(os.urandom(5000))
    return Artifact(path, "torchscript", [4], "float32")


def zip_not_a_model(tmp_path) -> Artifact:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    path = tmp_path / "zip.pt"
    path.write_bytes(buffer.getvalue())
    return Artifact(path, "torchscript", [4], "float32")


def upload_then(change):
    def prepare(aws, artifacts, tmp_path):
        pointer = aws.upload(artifacts["affine"])
        change(pointer)
        return {"model_pointer": json.dumps(pointer)}

    return prepare


def upload_artifact(make):
    def prepare(aws, artifacts, tmp_path):
        artifact = make(artifacts, tmp_path)
        return {"model_pointer": json.dumps(aws.upload(artifact))}

    return prepare


def via_ssm(value):
    def prepare(aws, artifacts, tmp_path):
        if value is not None:
            aws.ssm.put_parameter(Name=PARAMETER, Value=value, Type="String")
        return {"model_ssm_parameter": PARAMETER}

    return prepare


FAILURES = {
    "checksum_mismatch": (
        upload_then(lambda p: p.update(sha256="0" * 64)),
        "checksum_mismatch",
        "SHA-256 mismatch for s3://",
    ),
    "missing_version": (
        upload_then(lambda p: p.update(s3_version_id="no-such-version")),
        "object_not_found",
        "version no-such-version: NoSuchVersion",
    ),
    "missing_key": (
        upload_then(lambda p: p.update(key="models/demo/absent/model.pt")),
        "object_not_found",
        "models/demo/absent/model.pt",
    ),
    "missing_bucket": (
        upload_then(lambda p: p.update(bucket="no-such-bucket-here")),
        "object_not_found",
        "NoSuchBucket",
    ),
    "size_mismatch": (
        upload_then(lambda p: p.update(size=p["size"] + 1)),
        "size_mismatch",
        "bytes but the pointer says",
    ),
    "garbage_file": (
        upload_artifact(lambda a, tmp: garbage(tmp)),
        "unloadable_artifact",
        "not a zip archive",
    ),
    "zip_but_not_a_model": (
        upload_artifact(lambda a, tmp: zip_not_a_model(tmp)),
        "unloadable_artifact",
        "does not load as torchscript",
    ),
    "export_file_declared_torchscript": (
        upload_artifact(
            lambda a, tmp: Artifact(a["affine_export"].path, "torchscript", [4], "float32")
        ),
        "unloadable_artifact",
        "does not load as torchscript",
    ),
    "unsupported_format": (
        upload_then(lambda p: p.update(format="onnx")),
        "unsupported_format",
        "unsupported artifact format 'onnx'",
    ),
    "wrong_declared_shape": (
        upload_then(lambda p: p.update(input={"shape": [5], "dtype": "float32"})),
        "warmup_failed",
        "warm-up forward on a zero example of shape [1, 5] float32 failed",
    ),
    "output_not_a_tensor": (
        upload_artifact(lambda a, tmp: a["string_out"]),
        "warmup_failed",
        "the model output must be a tensor, or a tuple, list or dict of tensors; got str",
    ),
    "missing_parameter": (via_ssm(None), "parameter_not_found", "ParameterNotFound"),
    "parameter_not_json": (
        via_ssm("not json"),
        "pointer_invalid",
        "malformed model pointer from SSM",
    ),
    "pointer_missing_field": (
        via_ssm(json.dumps({"schema": 1, "model": "demo"})),
        "pointer_invalid",
        "version: Field required",
    ),
    "pointer_bad_sha": (
        upload_then(lambda p: p.update(sha256="xyz")),
        "pointer_invalid",
        "malformed model pointer from MODEL_POINTER: sha256",
    ),
}


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_permanent_failure_keeps_the_process_up_but_never_ready(
    case, aws, artifacts, make_settings, tmp_path, caplog, cache_dir
):
    prepare, cause, fragment = FAILURES[case]
    settings = make_settings(**prepare(aws, artifacts, tmp_path))
    with caplog.at_level(logging.INFO), serving(settings) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        version = client.get("/version")
        predict = client.post("/predict", json=ROW)
        ready_again = client.get("/readyz")
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["status"] == "failed"
    assert fragment in ready.json()["detail"]
    assert ready_again.json() == ready.json()
    assert version.status_code == 503
    assert predict.status_code == 503
    assert predict.json() == ready.json()
    [line] = errors(caplog)  # exactly one line says why
    assert getattr(line, "cause", None) == cause
    assert fragment in line.getMessage()
    # Nothing unverified is left in the cache under any name.
    leftovers = [p.name for p in cache_dir.iterdir()] if cache_dir.exists() else []
    assert all(not name.startswith(".tmp-") for name in leftovers)
    if cause in ("checksum_mismatch", "size_mismatch"):
        assert leftovers == []


def test_unreachable_endpoint_is_retried_then_reported(aws, artifacts, make_settings, caplog):
    pointer = aws.upload(artifacts["affine"])
    with socket_closed_port() as port:
        settings = make_settings(
            pointer, aws_endpoint_url=f"http://127.0.0.1:{port}", startup_retries=2
        )
        with caplog.at_level(logging.WARNING), serving(settings) as client:
            ready = client.get("/readyz").json()
    assert ready["status"] == "failed"
    assert "gave up after 3 attempts" in ready["detail"]
    retries = [r for r in caplog.records if getattr(r, "event", None) == "aws_retry"]
    assert len(retries) >= 2
    [line] = errors(caplog)
    assert getattr(line, "cause", None) == "aws_unavailable"


class socket_closed_port:
    """A port that refuses connections: bound once, then closed."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


def test_restart_with_the_same_version_downloads_nothing(
    aws, artifacts, make_settings, s3_requests
):
    pointer = aws.upload(artifacts["affine"])
    with serving(make_settings(pointer)) as client:
        assert client.get("/readyz").status_code == 200
    assert len(s3_requests.gets()) == 1
    s3_requests.calls.clear()
    with serving(make_settings(pointer)) as client:
        assert client.get("/readyz").status_code == 200
        samples = client.get("/metrics").text
    assert s3_requests.calls == []
    assert "inference_startup_downloaded_bytes 0.0" in samples


def test_multi_part_download_is_hashed_while_downloading(
    aws, artifacts, make_settings, s3_requests, cache_dir
):
    artifact = artifacts["padded"]
    part_size = 256 * 1024
    pointer = aws.upload(artifact)
    settings = make_settings(pointer, download_part_size=part_size, download_concurrency=4)
    with serving(settings) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/predict", json=ROW).status_code == 200
    expected = [f"bytes={p.start}-{p.end}" for p in plan_parts(artifact.size, part_size)]
    assert len(expected) > 8
    assert sorted(s3_requests.gets()) == sorted(expected)
    assert (cache_dir / artifact.sha256).read_bytes() == artifact.data


@pytest.mark.parametrize("flush_every", [64 * 1024 * 1024, 100_000], ids=["default", "flushing"])
def test_download_object_writes_and_hashes_every_part(aws, tmp_path, flush_every):
    blob = os.urandom(3 * 1024 * 1024 + 12345)
    put = aws.s3.put_object(Bucket=BUCKET, Key="blob", Body=blob)
    pointer = parse_pointer(
        json.dumps(
            {
                "schema": 1,
                "model": "blob",
                "version": "1",
                "bucket": BUCKET,
                "key": "blob",
                "s3_version_id": put["VersionId"],
                "sha256": hashlib.sha256(blob).hexdigest(),
                "size": len(blob),
                "format": "torchscript",
                "input": {"shape": [1], "dtype": "float32"},
            }
        ),
        source="test",
    )
    from inference.aws import s3_client
    from inference.config import Settings

    client = s3_client(Settings(model_pointer="x", aws_region="us-east-1"))
    progress: list[int] = []
    target = tmp_path / "out"
    fd = os.open(target, os.O_RDWR | os.O_CREAT)
    try:
        digest = download_object(
            client,
            pointer,
            fd,
            part_size=65536,
            concurrency=3,
            policy=RetryPolicy(attempts=1, base_seconds=0, max_seconds=0, stop=threading.Event()),
            on_progress=progress.append,
            flush_every=flush_every,  # the small value starts many background fdatasyncs
        )
    finally:
        os.close(fd)
    assert digest == hashlib.sha256(blob).hexdigest()
    assert target.read_bytes() == blob
    assert progress == sorted(progress)
    assert progress[-1] == len(blob)
    assert len(progress) == len(plan_parts(len(blob), 65536))


@pytest.mark.parametrize(
    ("damage", "verify"),
    [
        (lambda data: data[:100], True),  # truncated
        (lambda data: data[:100], False),  # the size check needs no re-hash
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), True),  # one bit flipped
    ],
    ids=["truncated", "truncated-verify-off", "bit-flip"],
)
def test_corrupt_cache_entry_is_downloaded_again(
    damage, verify, aws, artifacts, make_settings, s3_requests, cache_dir
):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    cache_dir.mkdir()
    (cache_dir / artifact.sha256).write_bytes(damage(artifact.data))
    with serving(make_settings(pointer, model_cache_verify=verify)) as client:
        assert client.get("/readyz").status_code == 200
    assert len(s3_requests.gets()) == 1
    assert (cache_dir / artifact.sha256).read_bytes() == artifact.data


def test_cache_hit_without_verification_skips_the_hash(
    aws, artifacts, make_settings, s3_requests, cache_dir
):
    artifact = artifacts["affine"]
    seed_cache(cache_dir, artifact)
    pointer = aws.upload(artifact)
    with serving(make_settings(pointer, model_cache_verify=False)) as client:
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
    assert s3_requests.calls == []
    assert 'phase="cache_verify"' not in metrics


def test_abandoned_partial_download_is_ignored_and_removed(
    aws, artifacts, make_settings, cache_dir
):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    cache_dir.mkdir()
    stale = cache_dir / f".tmp-{artifact.sha256}-99999-deadbeef"
    stale.write_bytes(artifact.data[:1000])
    old = time.time() - 3600
    os.utime(stale, (old, old))
    with serving(make_settings(pointer)) as client:
        assert client.get("/readyz").status_code == 200
    assert not stale.exists()
    assert sorted(p.name for p in cache_dir.iterdir()) == [artifact.sha256]


def test_partial_download_of_a_live_process_is_left_alone(aws, artifacts, make_settings, cache_dir):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    cache_dir.mkdir()
    live = cache_dir / f".tmp-{artifact.sha256}-1-cafebabe"
    live.write_bytes(b"in progress")
    old = time.time() - 3600
    os.utime(live, (old, old))
    fd = os.open(live, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a downloading process holds
    try:
        with serving(make_settings(pointer)) as client:
            assert client.get("/readyz").status_code == 200
        assert live.exists()
    finally:
        os.close(fd)


def test_cache_is_bounded_least_recently_used_first(aws, artifacts, make_settings, cache_dir):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    cache_dir.mkdir()
    now = time.time()
    names = {}
    for age, label in ((300, "oldest"), (200, "middle"), (100, "newest")):
        name = hashlib.sha256(label.encode()).hexdigest()
        (cache_dir / name).write_bytes(b"x" * 1000)
        os.utime(cache_dir / name, (now - age, now - age))
        names[label] = name
    unrelated = cache_dir / "README"
    unrelated.write_text("not ours")
    settings = make_settings(pointer, model_cache_max_bytes=artifact.size + 1500)
    with serving(settings) as client:
        assert client.get("/readyz").status_code == 200
    remaining = {p.name for p in cache_dir.iterdir()}
    assert remaining == {artifact.sha256, names["newest"], "README"}


def test_before_ready_every_model_endpoint_reports_the_phase(make_settings):
    """An SSM endpoint that accepts connections but never answers holds startup in 'resolving'."""
    import socket

    from fastapi.testclient import TestClient

    from inference.app import create_app

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    settings = make_settings(
        model_ssm_parameter=PARAMETER, aws_endpoint_url=f"http://127.0.0.1:{port}"
    )
    try:
        with TestClient(create_app(settings)) as client:
            health = client.get("/healthz")
            ready = client.get("/readyz")
            version = client.get("/version")
            predict = client.post("/predict", json=ROW)
            silent.close()  # lets the stuck request fail so shutdown is quick
    finally:
        silent.close()
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {"status": "resolving", "detail": "resolving the model pointer"}
    assert ready.headers["retry-after"] == "5"
    assert version.status_code == 503
    assert version.json() == ready.json()
    assert predict.status_code == 503
    assert predict.json() == ready.json()
