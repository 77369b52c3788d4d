"""Fixtures for the inference service: real tiny models, moto S3/SSM, a running app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.handlers import BUILTIN_HANDLERS
from fastapi.testclient import TestClient
from moto import mock_aws

from inference.app import Service, create_app
from inference.config import Settings
from tests.inference.models import Artifact, build_all

REGION = "us-east-1"
BUCKET = "modeldeck-models-test"


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never reach a real account, whatever the developer's shell exports.
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@dataclass
class FakeAws:
    """moto's S3 and SSM, with helpers that store artifacts the way the dashboard does."""

    s3: Any
    ssm: Any
    bucket: str = BUCKET

    def upload(self, artifact: Artifact, *, model: str = "demo", version: str = "1.0") -> dict:
        """Store ``artifact`` and return a pointer to exactly that object version."""
        key = f"models/{model}/{version}/{artifact.path.name}"
        put = self.s3.put_object(Bucket=self.bucket, Key=key, Body=artifact.data)
        return pointer_for(
            artifact, key=key, s3_version_id=put["VersionId"], model=model, version=version
        )

    def put_pointer(self, name: str, pointer: dict) -> None:
        self.ssm.put_parameter(Name=name, Value=json.dumps(pointer), Type="String", Overwrite=True)


def pointer_for(
    artifact: Artifact, *, key: str, s3_version_id: str, model: str = "demo", version: str = "1.0"
) -> dict:
    return {
        "schema": 1,
        "model": model,
        "version": version,
        "bucket": BUCKET,
        "key": key,
        "s3_version_id": s3_version_id,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "format": artifact.format,
        "input": {"shape": artifact.shape, "dtype": artifact.dtype},
        "promoted_by": "tester",
        "promoted_at": "2026-11-24T03:10:00Z",
        "reason": "test",
    }


@pytest.fixture
def aws() -> Iterator[FakeAws]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield FakeAws(s3=s3, ssm=boto3.client("ssm", region_name=REGION))


@dataclass
class S3Requests:
    """S3 API calls made by any boto3 client created while the fixture is active."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def gets(self) -> list[str | None]:
        """Return the Range header of every GetObject call."""
        return [rng for op, rng in self.calls if op == "GetObject"]


@pytest.fixture
def s3_requests() -> Iterator[S3Requests]:
    """Count S3 requests at botocore's edge, for clients the service builds itself."""
    record = S3Requests()

    def before_call(model: Any, params: dict, **kwargs: Any) -> None:
        record.calls.append((model.name, params.get("headers", {}).get("Range")))

    handler = ("before-call.s3", before_call)
    BUILTIN_HANDLERS.append(handler)
    try:
        yield record
    finally:
        BUILTIN_HANDLERS.remove(handler)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_settings(cache_dir: Path):
    def make(pointer: dict | str | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model_cache_dir": cache_dir,
            "aws_region": REGION,
            "startup_retries": 2,
            "startup_retry_base_seconds": 0.01,
            "startup_retry_max_seconds": 0.05,
            "torch_num_threads": 1,
        }
        if pointer is not None:
            values["model_pointer"] = pointer if isinstance(pointer, str) else json.dumps(pointer)
        values.update(overrides)
        return Settings(**values)

    return make


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """Run the app (lifespan included) and wait until startup has succeeded or failed."""
    app = create_app(settings)
    with TestClient(app) as client:
        assert service_of(client).state.wait_settled(120), "startup did not settle"
        yield client


def service_of(client: TestClient) -> Service:
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    return service


@pytest.fixture
def serve(aws: FakeAws, artifacts: dict[str, Artifact], make_settings):
    """Serve the named test model from moto S3 via MODEL_POINTER; yields a TestClient."""

    @contextmanager
    def run(name: str = "affine", **overrides: Any) -> Iterator[TestClient]:
        pointer = aws.upload(artifacts[name])
        with serving(make_settings(pointer, **overrides)) as client:
            yield client

    return run


def seed_cache(cache: Path, artifact: Artifact) -> None:
    """Put ``artifact`` into the cache the way a finished download leaves it."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / artifact.sha256).write_bytes(artifact.data)


@pytest.fixture
def serve_cached(artifacts: dict[str, Artifact], make_settings, cache_dir: Path):
    """Serve the named test model from a pre-filled cache: startup touches no AWS at all."""

    @contextmanager
    def run(name: str = "affine", **overrides: Any) -> Iterator[TestClient]:
        artifact = artifacts[name]
        seed_cache(cache_dir, artifact)
        pointer = pointer_for(
            artifact, key=f"models/demo/1.0/{artifact.path.name}", s3_version_id="v-cached"
        )
        pointer.update(overrides.pop("pointer_changes", {}))
        with serving(make_settings(pointer, **overrides)) as client:
            yield client

    return run
