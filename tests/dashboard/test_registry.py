"""The registry index: sync from S3 (including drops by other tools),
validation of real models in the sandbox, deletion rules, upload_model."""

from __future__ import annotations

import hashlib
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.management import CommandError, call_command
from django.utils import timezone

from dashboard.aws import s3
from dashboard.deployments.models import Deployment
from dashboard.registry.models import ModelVersion
from dashboard.registry.services import (
    VersionDeleteRefused,
    registry_sync,
    version_delete,
    version_hash,
    version_validate,
)
from tests.conftest import publish
from tests.dashboard.factories import make_environment


class Tiny(torch.nn.Module):
    def __init__(self, inputs: int = 4) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(inputs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def scripted(path: Path, inputs: int = 4) -> Path:
    torch.jit.save(torch.jit.script(Tiny(inputs)), str(path))
    return path


def put(key: str, data: bytes) -> None:
    s3._s3().put_object(Bucket="test-models", Key=key, Body=data)


def test_sync_indexes_a_drop_without_manifest_and_hashes_it(
    aws: str, db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    data = b"weights" * 1000
    put("models/fraud/2026-01/model.pt", data)
    put("models/fraud/../evil/x.pt", b"x")  # not a valid version name: never indexed
    put("models/Bad_Model/1/x.pt", b"x")
    with django_capture_on_commit_callbacks() as callbacks:
        report = registry_sync()
    assert (report.created, report.deleted) == (1, 0)
    assert len(callbacks) == 1  # the SHA-256 is computed by a worker
    row = ModelVersion.objects.get(model_name="fraud")
    assert row.status == "invalid" and "input signature" in row.status_detail
    assert (row.size, row.format, row.has_manifest) == (len(data), "torchscript", False)
    version_hash(version_id=row.pk)
    row.refresh_from_db()
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert row.s3_version_id  # pinned from the very download that hashed it
    again = registry_sync()
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    assert ModelVersion.objects.count() == 1  # nothing listed twice


def test_sync_drops_deleted_folders_and_notices_changes(aws: str, db: Any, tmp_path: Path) -> None:
    publish("iris", "1.0", tmp_path)
    publish("iris", "2.0", tmp_path)
    s3.delete_object(bucket="test-models", key="models/iris/1.0/model.pt")
    s3.delete_object(bucket="test-models", key="models/iris/1.0/manifest.json")
    put("models/iris/2.0/model.pt", b"rewritten by someone")  # size no longer matches
    report = registry_sync()
    assert report.deleted == 1 and report.updated == 1
    row = ModelVersion.objects.get(version="2.0")
    assert row.status == "invalid" and "manifest.json says" in row.status_detail


def test_validation_of_real_models(aws: str, db: Any, tmp_path: Path, settings: Any) -> None:
    settings.VALIDATION_TIME_LIMIT_SECONDS = 120
    from dashboard.registry.services import version_publish

    good = version_publish(
        model="iris",
        version="good",
        path=scripted(tmp_path / "g.pt"),
        format="torchscript",
        input_shape=[4],
        input_dtype="float32",
        created_by="t",
        artifact="model.pt",
    )
    wrong = version_publish(
        model="iris",
        version="wrong-shape",
        path=scripted(tmp_path / "w.pt"),
        format="torchscript",
        input_shape=[5],
        input_dtype="float32",
        created_by="t",
        artifact="model.pt",
    )
    (tmp_path / "junk.pt").write_bytes(b"not a model at all" * 100)
    junk = version_publish(
        model="iris",
        version="junk",
        path=tmp_path / "junk.pt",
        format="torchscript",
        input_shape=[4],
        input_dtype="float32",
        created_by="t",
        artifact="model.pt",
    )
    for row in (good, wrong, junk):
        assert row.status == "validating"
        version_validate(version_id=row.pk)
        row.refresh_from_db()
    assert good.status == "valid", good.status_detail
    assert good.validation["parameter_count"] == 15 and good.validation["output_shape"] == [1, 3]
    assert wrong.status == "invalid" and "shapes cannot be multiplied" in wrong.status_detail
    assert junk.status == "invalid" and "TorchScript" in junk.status_detail


def test_validation_catches_a_manifest_that_lies(aws: str, db: Any, tmp_path: Path) -> None:
    from dashboard.registry.services import version_publish

    row = version_publish(
        model="iris",
        version="liar",
        path=scripted(tmp_path / "m.pt"),
        format="torchscript",
        input_shape=[4],
        input_dtype="float32",
        created_by="t",
        artifact="model.pt",
    )
    ModelVersion.objects.filter(pk=row.pk).update(sha256="0" * 64)
    version_validate(version_id=row.pk)
    row.refresh_from_db()
    assert row.status == "invalid" and "SHA-256 mismatch" in row.status_detail


def test_delete_rules(aws: str, db: Any, tmp_path: Path, personas: Any) -> None:
    for version in ("1.0", "2.0", "3.0"):
        publish("iris", version, tmp_path)
    staging = make_environment("iris", "staging")
    staging.promoted_version = "3.0"
    staging.save()
    with pytest.raises(VersionDeleteRefused, match="promoted to staging"):
        version_delete(version=ModelVersion.objects.get(version="3.0"), user=personas["deployer"])
    Deployment.objects.create(
        environment=staging,
        from_version="2.0",
        to_version="3.0",
        pointer={},
        status="succeeded",
        finished_at=timezone.now(),
    )
    with pytest.raises(VersionDeleteRefused, match="live in the last"):
        version_delete(version=ModelVersion.objects.get(version="2.0"), user=personas["deployer"])
    version_delete(version=ModelVersion.objects.get(version="1.0"), user=personas["deployer"])
    assert not ModelVersion.objects.filter(version="1.0").exists()
    assert list(s3.iter_objects(bucket="test-models", prefix="models/iris/1.0/")) == []


def test_delete_page_needs_the_typed_confirmation(
    aws: str, db: Any, tmp_path: Path, personas: Any
) -> None:
    from django.test import Client

    publish("iris", "1.0", tmp_path)
    client = Client()
    client.force_login(personas["deployer"])
    response = client.post("/models/iris/versions/1.0/delete", {"confirm": "1"}, follow=True)
    assert "to confirm" in response.content.decode()
    assert ModelVersion.objects.filter(version="1.0").exists()
    client.post("/models/iris/versions/1.0/delete", {"confirm": "1.0"})
    assert not ModelVersion.objects.filter(version="1.0").exists()


def test_upload_model_command(aws: str, db: Any, tmp_path: Path) -> None:
    path = scripted(tmp_path / "model.pt")
    out = StringIO()
    call_command(
        "upload_model",
        "iris",
        "cli-1",
        str(path),
        "--shape",
        "4",
        "--metric",
        "accuracy=0.9",
        stdout=out,
    )
    row = ModelVersion.objects.get(version="cli-1")
    assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row.metrics == {"accuracy": 0.9} and row.status == "validating"
    with pytest.raises(CommandError, match="already exists"):
        call_command("upload_model", "iris", "cli-1", str(path), "--shape", "4")
    with pytest.raises(CommandError, match="--shape"):
        call_command("upload_model", "iris", "cli-2", str(path), "--shape", "four")
    with pytest.raises(CommandError, match="invalid version name"):
        call_command("upload_model", "iris", "../x", str(path), "--shape", "4")


def test_versions_api_filters_and_sorts(aws: str, db: Any, tmp_path: Path, personas: Any) -> None:
    from django.test import Client

    from tests.dashboard.factories import token_headers

    publish("iris", "1.0", tmp_path, notes="baseline")
    publish("iris", "2.0", tmp_path, status="invalid")
    publish("iris", "3.0", tmp_path, notes="candidate")
    staging = make_environment("iris", "staging")
    staging.promoted_version = "1.0"
    staging.save()
    client = Client()
    headers = token_headers(personas["viewer"])

    def versions(query: str) -> list[str]:
        body = client.get(f"/api/models/iris/versions?{query}", headers=headers).json()
        return [v["version"] for v in body["items"]]

    assert versions("") == ["3.0", "2.0", "1.0"]
    assert versions("sort=oldest") == ["1.0", "2.0", "3.0"]
    assert versions("status=invalid") == ["2.0"]
    assert versions("environment=staging") == ["1.0"]
    assert versions("q=candid") == ["3.0"]
    assert client.get("/api/models/iris/versions?status=bogus", headers=headers).status_code == 400
    assert client.get("/api/models/iris/versions?sort=random", headers=headers).status_code == 400


def test_a_version_written_by_the_dashboard_is_unchanged_for_the_next_sync(
    aws: str, db: Any, tmp_path: Path
) -> None:
    """Publishing records the fingerprint the sync computes, so the sync does
    not re-index (and re-validate, unpinning it) what the dashboard just wrote."""
    from dashboard.registry.models import ModelVersion
    from dashboard.registry.services import registry_sync

    row = publish("iris", "1.0", tmp_path)
    ModelVersion.objects.filter(pk=row.pk).update(s3_version_id=row.s3_version_id or "v")
    report = registry_sync()
    assert (report.created, report.updated, report.unchanged) == (0, 0, 1)
    row.refresh_from_db()
    assert row.status == "valid" and row.s3_version_id
