"""Uploads through the API, the way a CI pipeline does them: presigned
multipart URLs PUT straight to S3 (moto's server), then completion."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import httpx
import pytest
from django.test import Client

from dashboard.aws import s3
from dashboard.registry.models import ModelVersion, Upload
from tests.dashboard.factories import token_headers

MIB = 1024 * 1024


@pytest.fixture
def small_parts(settings: Any) -> None:
    settings.UPLOAD_PART_BYTES = 5 * MIB


def api(client: Client, method: str, path: str, user: Any, body: Any = None) -> Any:
    kwargs: dict[str, Any] = {"headers": token_headers(user)}
    if body is not None:
        kwargs["data"] = body if isinstance(body, str) else json.dumps(body)
        kwargs["content_type"] = "application/json"
    return getattr(client, method)(f"/api/models/{path}", **kwargs)


def start(client: Client, user: Any, data: bytes, version: str = "1.0", **extra: Any) -> Any:
    body = {
        "version": version,
        "filename": "model.pt",
        "size": len(data),
        "input": {"shape": [4], "dtype": "float32"},
        "notes": "from CI",
        "metrics": {"accuracy": 0.9},
        **extra,
    }
    return api(client, "post", "iris/uploads", user, body)


def put_parts(plan: dict[str, Any], data: bytes, only: set[int] | None = None) -> list[dict]:
    size = plan["part_size"]
    done = []
    for part in plan["parts"]:
        n = part["part_number"]
        if only is not None and n not in only:
            continue
        response = httpx.put(part["url"], content=data[(n - 1) * size : n * size])
        assert response.status_code == 200, response.text
        done.append({"part_number": n, "etag": response.headers["ETag"]})
    return done


def test_upload_in_parts_creates_a_validating_version(
    client: Client,
    aws: str,
    personas: Any,
    small_parts: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    data = os.urandom(12 * MIB)
    response = start(client, personas["deployer"], data)
    assert response.status_code == 201, response.content
    plan = response.json()
    assert (plan["part_size"], plan["part_count"], len(plan["parts"])) == (5 * MIB, 3, 3)
    assert ModelVersion.objects.get(version="1.0").status == "uploading"
    parts = put_parts(plan, data)
    sha = hashlib.sha256(data).hexdigest()
    with django_capture_on_commit_callbacks() as callbacks:
        done = api(
            client,
            "post",
            f"iris/uploads/{plan['upload_id']}/complete",
            personas["deployer"],
            {"parts": parts, "sha256": sha},
        )
    assert done.status_code == 201, done.content
    assert done.json()["status"] == "validating" and done.json()["sha256"] == sha
    assert len(callbacks) == 1  # validation queued
    row = ModelVersion.objects.get(version="1.0")
    assert row.s3_version_id and row.has_manifest and row.size == len(data)
    manifest = s3.get_json(bucket="test-models", key="models/iris/1.0/manifest.json")
    assert manifest["sha256"] == sha and manifest["input"] == {"shape": [4], "dtype": "float32"}
    assert manifest["created_by"] == "deployer" and manifest["metrics"] == {"accuracy": 0.9}
    assert Upload.objects.get().state == "completed"


def test_resume_lists_parts_already_uploaded(
    client: Client, aws: str, personas: Any, small_parts: None
) -> None:
    data = os.urandom(11 * MIB)
    plan = start(client, personas["deployer"], data).json()
    first = put_parts(plan, data, only={1, 3})
    status = api(client, "get", f"iris/uploads/{plan['upload_id']}", personas["deployer"]).json()
    assert [p["part_number"] for p in status["parts_done"]] == [1, 3]
    assert [p["part_number"] for p in status["parts"]] == [2]
    second = put_parts(status, data)
    parts = sorted(first + second, key=lambda p: p["part_number"])
    done = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert done.status_code == 201


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"version": "../x"}, "invalid version name"),
        ({"version": "v 1"}, "invalid version name"),
        ({"version": "x" * 500}, "version"),
        ({"version": "v\u0131"}, "invalid version name"),
        ({"filename": "../model.pt"}, "filename must be a plain file name without a path"),
        ({"filename": "../../etc/passwd"}, "filename must be a plain file name without a path"),
        ({"filename": "dir\\model.pt"}, "without a path"),
        ({"filename": ".."}, "without a path"),
        ({"filename": "manifest.json"}, "filename must not be manifest.json"),
        ({"filename": "-x.pt"}, "filename must be a plain file name of letters"),
        ({"size": 0}, "size"),
        # JSON booleans and fractions are not byte counts (pydantic would
        # otherwise take true as 1 and reserve the name).
        ({"size": True}, "size: Input should be a valid integer"),
        ({"size": False}, "size: Input should be a valid integer"),
        ({"size": 100.0}, "size: Input should be a valid integer"),
        ({"size": "100"}, "size: Input should be a valid integer"),
        ({"input": {"shape": [True], "dtype": "float32"}}, "input.shape.0"),
        ({"size": -5}, "size"),
        ({"size": 10**15}, "over the limit"),
        ({"sha256": "abc"}, "sha256"),
        ({"format": "onnx"}, "format"),
        ({"input": {"shape": [], "dtype": "float32"}}, "input.shape"),
        ({"input": {"shape": [4], "dtype": "float16"}}, "dtype"),
        ({"metrics": {"a": "b"}}, "metrics"),
    ],
)
def test_bad_upload_requests_leave_nothing(
    client: Client, aws: str, personas: Any, change: dict, needle: str
) -> None:
    response = start(client, personas["deployer"], b"x" * 100, **change)
    assert response.status_code == 400, response.content
    assert needle in response.json()["detail"]
    assert not ModelVersion.objects.exists() and not Upload.objects.exists()
    assert list(s3.iter_multipart_uploads(bucket="test-models", prefix="models/")) == []


def test_bad_model_name_in_path(client: Client, aws: str, personas: Any) -> None:
    response = api(
        client,
        "post",
        "Bad..Model/uploads",
        personas["deployer"],
        {
            "version": "1",
            "filename": "m.pt",
            "size": 1,
            "input": {"shape": [1], "dtype": "float32"},
        },
    )
    assert response.status_code == 400 and "model name" in response.json()["detail"]


def test_existing_version_is_409(client: Client, aws: str, personas: Any, tmp_path: Any) -> None:
    from tests.conftest import publish

    publish("iris", "1.0", tmp_path)
    response = start(client, personas["deployer"], b"x" * 10)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]
    first = start(client, personas["deployer"], b"x" * 10, version="2.0")
    assert first.status_code == 201
    again = start(client, personas["deployer"], b"x" * 10, version="2.0")
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        ([1, 3], "parts missing: 2"),
        ([2, 1, 3], "ascending"),
        ([1, 2, 2, 3], "listed twice: 2"),
        ([1, 2, 3, 4], "part 4 does not exist"),
        ([], "every uploaded part"),
    ],
)
def test_bad_part_lists_are_refused_and_the_upload_stays_open(
    client: Client, aws: str, personas: Any, small_parts: None, parts: list[int], needle: str
) -> None:
    data = os.urandom(11 * MIB)
    plan = start(client, personas["deployer"], data).json()
    etags = {p["part_number"]: p["etag"] for p in put_parts(plan, data)}
    listed = [
        {"part_number": n, "etag": etags.get(n, '"0123456789abcdef0123456789abcdef"')}
        for n in parts
    ]
    response = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": listed, "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert response.status_code == 400 and needle in response.json()["detail"]
    assert ModelVersion.objects.get(version="1.0").status == "uploading"
    assert s3.head_object(bucket="test-models", key="models/iris/1.0/model.pt") is None


def test_a_boolean_part_number_is_refused(client: Client, aws: str, personas: Any) -> None:
    data = b"x" * 100
    plan = start(client, personas["deployer"], data).json()
    (done,) = put_parts(plan, data)
    response = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": [{"part_number": True, "etag": done["etag"]}]},
    )
    assert response.status_code == 400
    assert "parts.0.part_number: Input should be a valid integer" in response.json()["detail"]
    assert ModelVersion.objects.get(version="1.0").status == "uploading"


def test_wrong_etag_is_refused_by_s3(
    client: Client, aws: str, personas: Any, small_parts: None
) -> None:
    data = os.urandom(6 * MIB)
    plan = start(client, personas["deployer"], data).json()
    parts = put_parts(plan, data)
    parts[0]["etag"] = '"0123456789abcdef0123456789abcdef"'
    response = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert response.status_code == 400 and "S3 refused" in response.json()["detail"]


def test_completion_needs_the_sha256(client: Client, aws: str, personas: Any) -> None:
    data = b"y" * 1000
    plan = start(client, personas["deployer"], data).json()
    parts = put_parts(plan, data)
    response = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": parts},
    )
    assert response.status_code == 400 and "sha256" in response.json()["detail"]


def test_size_mismatch_discards_the_object(client: Client, aws: str, personas: Any) -> None:
    plan = start(client, personas["deployer"], b"z" * 1000).json()
    # The client PUTs fewer bytes than it declared.
    response = httpx.put(plan["parts"][0]["url"], content=b"z" * 10)
    parts = [{"part_number": 1, "etag": response.headers["ETag"]}]
    done = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": parts, "sha256": "a" * 64},
    )
    assert done.status_code == 400 and "declared 1000" in done.json()["detail"]
    assert not ModelVersion.objects.exists()
    assert s3.head_object(bucket="test-models", key="models/iris/1.0/model.pt") is None


def test_cancel_aborts_and_frees_the_name(client: Client, aws: str, personas: Any) -> None:
    plan = start(client, personas["deployer"], b"q" * 100).json()
    response = api(client, "delete", f"iris/uploads/{plan['upload_id']}", personas["deployer"])
    assert response.status_code == 204
    assert not ModelVersion.objects.exists()
    assert list(s3.iter_multipart_uploads(bucket="test-models", prefix="models/")) == []
    assert start(client, personas["deployer"], b"q" * 100).status_code == 201
    again = api(client, "delete", f"iris/uploads/{plan['upload_id']}", personas["deployer"])
    assert again.status_code == 409


def test_unknown_upload_is_404(client: Client, aws: str, personas: Any) -> None:
    response = api(client, "get", "iris/uploads/nope", personas["deployer"])
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("persona", "status"), [("viewer", 403), ("outsider", 403), ("deployer", 201)]
)
def test_upload_needs_deployer(
    client: Client, aws: str, personas: Any, persona: str, status: int
) -> None:
    assert start(client, personas[persona], b"x").status_code == status


def test_abandoned_uploads_are_aborted(
    client: Client, aws: str, personas: Any, settings: Any
) -> None:
    from django.utils import timezone

    from dashboard.registry.uploads import uploads_abort_abandoned

    plan = start(client, personas["deployer"], b"a" * 10).json()
    fresh = start(client, personas["deployer"], b"b" * 10, version="2.0").json()
    Upload.objects.filter(upload_id=plan["upload_id"]).update(
        created_at=timezone.now() - timezone.timedelta(hours=48)
    )
    # And one started by another tool, unknown to the database (moto reports
    # every upload as initiated in 2010, so it counts as abandoned).
    s3.create_multipart_upload(bucket="test-models", key="models/x/1/m.pt", content_type="x")
    assert uploads_abort_abandoned() == 2
    assert Upload.objects.get(upload_id=plan["upload_id"]).state == "aborted"
    assert Upload.objects.get(upload_id=fresh["upload_id"]).state == "active"
    assert not ModelVersion.objects.filter(version="1.0").exists()
    left = [u.upload_id for u in s3.iter_multipart_uploads(bucket="test-models", prefix="models/")]
    assert left == [fresh["upload_id"]]


def test_only_the_uploader_or_an_admin_may_cancel(client: Client, aws: str, personas: Any) -> None:
    from django.contrib.auth import get_user_model

    from dashboard.accounts.services import user_set_role

    other = get_user_model().objects.create_user(username="deployer2", password="x")
    user_set_role(user=other, role="deployer")
    plan = start(client, personas["deployer"], b"q" * 100).json()
    path = f"iris/uploads/{plan['upload_id']}"
    assert api(client, "delete", path, other).status_code == 403
    assert api(client, "delete", path, personas["admin"]).status_code == 204


def test_upload_aborted_behind_our_back_releases_the_name(
    client: Client, aws: str, personas: Any
) -> None:
    from botocore.stub import Stubber

    from dashboard.aws.clients import client as aws_client

    data = b"w" * 1000
    plan = start(client, personas["deployer"], data).json()
    parts = put_parts(plan, data)
    # Real S3 answers 404 NoSuchUpload here (moto answers 500), so this one
    # answer comes from botocore's Stubber, checked against S3's model.
    with Stubber(aws_client("s3")) as stubber:
        stubber.add_client_error("complete_multipart_upload", "NoSuchUpload", "gone", 404)
        done = api(
            client,
            "post",
            f"iris/uploads/{plan['upload_id']}/complete",
            personas["deployer"],
            {"parts": parts, "sha256": hashlib.sha256(data).hexdigest()},
        )
    assert done.status_code == 409 and "start the upload again" in done.json()["detail"]
    assert not ModelVersion.objects.exists()
    assert Upload.objects.get().state == "aborted"
