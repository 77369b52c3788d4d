"""The registry sync at scale: folders indexed from the bucket listing alone,
manifests read afterwards by a worker many at a time, validation queued once a
manifest says what to validate; and the rules that must not move with it:
drops without a manifest, hostile names, manifests that lie, deleted folders."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard.aws import s3
from dashboard.aws.clients import client
from dashboard.registry.models import ModelVersion
from dashboard.registry.services import registry_sync, version_validate, versions_describe

ARTIFACT = b"tiny artifact bytes " * 3
SHA = hashlib.sha256(ARTIFACT).hexdigest()


def put(key: str, data: bytes) -> None:
    s3._s3().put_object(Bucket="test-models", Key=key, Body=data)


def manifest(model: str, version: str, **overrides: Any) -> bytes:
    document = {
        "schema": 1,
        "model": model,
        "version": version,
        "artifact": "model.pt",
        "format": "torchscript",
        "sha256": SHA,
        "size": len(ARTIFACT),
        "input": {"shape": [4], "dtype": "float32"},
        "created_at": "2026-01-01T00:00:00Z",
        "created_by": "trainer",
        "notes": f"build {version}",
        "metrics": {"accuracy": 0.9},
    }
    document.update(overrides)
    return json.dumps(document).encode()


def folder(
    model: str, version: str, *, document: bytes | None = None, artifact: bool = True
) -> None:
    base = f"models/{model}/{version}/"
    if artifact:
        put(base + "model.pt", ARTIFACT)
    if document is not None:
        put(base + "manifest.json", document)


@pytest.fixture
def s3_calls(aws: str) -> Iterator[Counter[str]]:
    """Counts the S3 operations made (botocore's own event hook; nothing is faked)."""
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    events = client("s3").meta.events
    events.register("before-call.s3", count)
    yield calls
    events.unregister("before-call.s3", count)


@pytest.fixture
def bucket(aws: str) -> None:
    for i in range(12):
        folder("iris", f"1.{i}", document=manifest("iris", f"1.{i}"))
    folder("iris", "liar-name", document=manifest("iris", "someone-else"))
    folder("iris", "liar-model", document=manifest("fraud", "liar-model"))
    folder("iris", "liar-size", document=manifest("iris", "liar-size", size=999))
    folder("iris", "no-artifact", document=manifest("iris", "no-artifact"), artifact=False)
    folder("iris", "not-json", document=b"{not json")
    folder("iris", "bad-schema", document=manifest("iris", "bad-schema", schema=2))
    folder("iris", "dropped")  # no manifest: `aws s3 cp` from a training job
    # Names the contract forbids never become rows.
    for key in (
        "models/iris/../evil/x.pt",
        "models/iris/with space/x.pt",
        "models/iris/" + "v" * 65 + "/x.pt",
        "models/Bad_Model/1/x.pt",
        "models/iris/deep/er/x.pt",
        "models/iris/ünïcode/x.pt",
        "models/-iris/1/x.pt",
    ):
        put(key, b"x")


def test_sync_indexes_from_the_listing_and_a_worker_reads_the_manifests(
    bucket: None, db: Any, s3_calls: Counter[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        report = registry_sync()
    assert s3_calls["GetObject"] == 0 and s3_calls["HeadObject"] == 0
    assert s3_calls["ListObjectsV2"] >= 1
    assert (report.created, report.updated, report.deleted) == (19, 0, 0)
    assert report.pending == 18  # every folder with a manifest.json
    assert len(callbacks) == 1  # one producer queues every task of the model
    rows = {r.version: r for r in ModelVersion.objects.filter(model_name="iris")}
    assert set(rows) == {f"1.{i}" for i in range(12)} | {
        "liar-name",
        "liar-model",
        "liar-size",
        "no-artifact",
        "not-json",
        "bad-schema",
        "dropped",
    }
    assert ModelVersion.objects.count() == 19
    assert all(
        r.manifest_pending and r.status == "validating" for v, r in rows.items() if v != "dropped"
    )
    dropped = rows["dropped"]
    assert (dropped.manifest_pending, dropped.status, dropped.has_manifest) == (
        False,
        "invalid",
        False,
    )
    assert "input signature" in dropped.status_detail and dropped.size == len(ARTIFACT)
    # A pending version is not validated before its manifest says what to check.
    assert version_validate(version_id=rows["1.0"].pk).validation is None  # type: ignore[union-attr]

    pending = [r.pk for r in rows.values() if r.manifest_pending]
    with django_capture_on_commit_callbacks() as callbacks:
        assert versions_describe(version_ids=pending) == 18
    assert s3_calls["GetObject"] == 18
    assert versions_describe(version_ids=pending) == 0  # a repeated task does nothing
    assert len(callbacks) == 1
    rows = {r.version: r for r in ModelVersion.objects.filter(model_name="iris")}
    good = rows["1.3"]
    assert (good.status, good.manifest_pending, good.sha256, good.input_shape) == (
        "validating",
        False,
        SHA,
        [4],
    )
    assert (good.notes, good.created_by, good.metrics) == (
        "build 1.3",
        "trainer",
        {"accuracy": 0.9},
    )
    assert good.created_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    expected = {
        "liar-name": "describes iris someone-else, not this folder",
        "liar-model": "describes fraud liar-model, not this folder",
        "liar-size": "manifest.json says 999",
        "no-artifact": "artifact model.pt is missing",
        "not-json": "manifest.json is unusable",
        "bad-schema": "manifest schema must be 1",
    }
    for version, detail in expected.items():
        assert rows[version].status == "invalid", version
        assert detail in rows[version].status_detail, (version, rows[version].status_detail)
    # Counts moved with every write (database triggers).
    page_counts = {
        s: ModelVersion.objects.filter(status=s).count() for s in ("invalid", "validating")
    }
    from dashboard.registry.selectors import version_count

    assert version_count(model="iris", status="invalid") == page_counts["invalid"] == 7
    assert version_count(model="iris", status="validating") == page_counts["validating"] == 12


def test_resync_of_unchanged_folders_writes_nothing(bucket: None, db: Any) -> None:
    registry_sync()
    versions_describe(version_ids=list(ModelVersion.objects.values_list("pk", flat=True)))
    with CaptureQueriesContext(connection) as queries:
        again = registry_sync()
    assert (again.created, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 19)
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in {"INSERT", "UPDATE", "DELETE"}]
    assert writes == []


def test_changed_and_deleted_folders(bucket: None, db: Any) -> None:
    registry_sync()
    versions_describe(version_ids=list(ModelVersion.objects.values_list("pk", flat=True)))
    ModelVersion.objects.filter(version="1.1").update(status="valid")
    put("models/iris/1.1/model.pt", b"rewritten")  # the manifest no longer fits
    for key in ("models/iris/1.2/model.pt", "models/iris/1.2/manifest.json"):
        s3.delete_object(bucket="test-models", key=key)
    report = registry_sync()
    assert (report.updated, report.deleted, report.pending) == (1, 1, 1)
    row = ModelVersion.objects.get(version="1.1")
    assert (row.status, row.manifest_pending, row.validation) == ("validating", True, None)
    versions_describe(version_ids=[row.pk])
    row.refresh_from_db()
    assert row.status == "invalid" and "manifest.json says" in row.status_detail
    assert not ModelVersion.objects.filter(version="1.2").exists()


def test_a_folder_deleted_before_its_manifest_is_read(bucket: None, db: Any) -> None:
    registry_sync()
    row = ModelVersion.objects.get(version="1.4")
    for key in ("models/iris/1.4/model.pt", "models/iris/1.4/manifest.json"):
        s3.delete_object(bucket="test-models", key=key)
    versions_describe(version_ids=[row.pk])
    row.refresh_from_db()
    assert row.status == "invalid" and "disappeared" in row.status_detail
    assert registry_sync().deleted == 1


def test_uploads_in_progress_are_left_alone(bucket: None, db: Any) -> None:
    ModelVersion.objects.create(
        model_name="iris", version="1.5", created_at=timezone.now(), status="uploading"
    )
    ModelVersion.objects.create(
        model_name="iris", version="being-uploaded", created_at=timezone.now(), status="uploading"
    )
    report = registry_sync()
    assert report.deleted == 0 and report.created == 18
    assert ModelVersion.objects.get(version="1.5").status == "uploading"
    assert ModelVersion.objects.filter(version="being-uploaded").exists()


def test_a_lost_describe_task_is_queued_again_by_a_later_sync(bucket: None, db: Any) -> None:
    first = registry_sync()
    assert first.pending == 18
    assert registry_sync().pending == 0  # queued a moment ago: not again
    ModelVersion.objects.filter(version="1.0").update(
        synced_at=timezone.now() - dt.timedelta(hours=1)
    )
    assert registry_sync().pending == 1
    assert registry_sync().pending == 0  # queued again once, not at every sync


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reads_the_manifests(bucket: None) -> None:
    from celery.contrib.testing.worker import start_worker

    from dashboard.celery import app

    app.control.purge()
    registry_sync()
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
    ):
        deadline = time.monotonic() + 60
        while ModelVersion.objects.filter(manifest_pending=True).exists():
            assert time.monotonic() < deadline, "the worker did not read the manifests"
            time.sleep(0.2)
        app.control.purge()  # the validations they queued are not this test's
    liar = ModelVersion.objects.get(version="liar-size")
    assert liar.status == "invalid" and "manifest.json says 999" in liar.status_detail
    good = ModelVersion.objects.get(version="1.7")
    assert good.sha256 == SHA and good.input_shape == [4]
