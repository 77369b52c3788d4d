"""Uploads cannot be turned against the registry: part URLs sign each part's
exact size and live only as long as an upload needs, only the uploader (or an
admin) may resume or complete, nothing that exists in S3 is overwritten, and a
deleted version's name is never used again."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from dashboard.accounts.services import user_set_role
from dashboard.aws import s3
from dashboard.aws.errors import AwsAlreadyExistsError
from dashboard.registry.models import DeletedVersion, ModelVersion, Upload
from dashboard.registry.services import (
    VersionExists,
    registry_sync,
    version_delete,
)
from tests.conftest import publish, write_artifact
from tests.dashboard.factories import token_headers

MIB = 1024 * 1024
SECRET_ACCESS_KEY = "test"  # the embedded AWS's fake credentials (tests/conftest.py)


def api(client: Client, method: str, path: str, user: Any, body: Any = None) -> Any:
    kwargs: dict[str, Any] = {"headers": token_headers(user)}
    if body is not None:
        kwargs["data"] = json.dumps(body)
        kwargs["content_type"] = "application/json"
    return getattr(client, method)(f"/api/models/{path}", **kwargs)


def start(client: Client, user: Any, size: int, version: str = "1.0") -> Any:
    body = {
        "version": version,
        "filename": "model.pt",
        "size": size,
        "input": {"shape": [4], "dtype": "float32"},
    }
    return api(client, "post", "iris/uploads", user, body)


def sigv4_query_signature_ok(url: str, method: str, headers: dict[str, str]) -> bool:
    """Check a presigned URL the way S3 does (AWS SigV4, query-string auth,
    as AWS documents it): rebuild the canonical request from what the client
    really sends, sign it, compare. Written from the spec, not with botocore,
    so it checks botocore's URL rather than repeating it."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    signed = query["X-Amz-SignedHeaders"].split(";")
    sent = {k.lower(): v.strip() for k, v in {**headers, "host": parts.netloc}.items()}
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical_headers = "".join(f"{name}:{sent.get(name, '')}\n" for name in signed)
    signed_names = ";".join(signed)
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, canonical_headers, signed_names, "UNSIGNED-PAYLOAD"]
    )
    amz_date = query["X-Amz-Date"]
    _, day, region, service, terminal = query["X-Amz-Credential"].split("/")
    scope = f"{day}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + SECRET_ACCESS_KEY).encode()
    for item in (day, region, service, terminal):
        key = hmac.new(key, item.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def test_each_part_url_is_signed_for_that_parts_exact_size(
    client: Client, aws: str, personas: Any, settings: Any
) -> None:
    settings.UPLOAD_PART_BYTES = 5 * MIB
    size = 12 * MIB + 123
    plan = start(client, personas["deployer"], size).json()
    lengths = {1: 5 * MIB, 2: 5 * MIB, 3: 2 * MIB + 123}
    for part in plan["parts"]:
        url, length = part["url"], lengths[part["part_number"]]
        assert "X-Amz-SignedHeaders=content-length%3Bhost" in url
        # what S3 would accept: exactly this part's size, nothing bigger or smaller
        assert sigv4_query_signature_ok(url, "PUT", {"Content-Length": str(length)})
        for wrong in (length + 1, length - 1, 5 * 1024**3):
            assert not sigv4_query_signature_ok(url, "PUT", {"Content-Length": str(wrong)})


def test_the_verifier_is_s3s_algorithm(aws: str) -> None:
    """The spec-built check agrees with botocore on a URL botocore signed,
    and refuses a tampered one (so the test above can fail)."""
    url = s3.presign_upload_part(
        bucket="test-models",
        key="models/iris/1.0/model.pt",
        upload_id="u",
        part_number=1,
        content_length=10,
        expires_in=60,
    )
    assert sigv4_query_signature_ok(url, "PUT", {"Content-Length": "10"})
    assert not sigv4_query_signature_ok(
        url.replace("partNumber=1", "partNumber=2"), "PUT", {"Content-Length": "10"}
    )


def test_part_urls_live_only_as_long_as_an_upload_needs(
    client: Client, aws: str, personas: Any, settings: Any
) -> None:
    assert settings.UPLOAD_URL_EXPIRES_SECONDS == 900  # the default: 15 minutes
    before = timezone.now()
    plan = start(client, personas["deployer"], 100).json()
    assert "X-Amz-Expires=900" in plan["parts"][0]["url"]
    expires = dt.datetime.fromisoformat(plan["expires_at"])
    assert dt.timedelta(seconds=899) <= expires - before <= dt.timedelta(seconds=905)
    # renewal: asking for the upload again gives URLs that start their 15 minutes now
    again = api(client, "get", f"iris/uploads/{plan['upload_id']}", personas["deployer"]).json()
    assert dt.datetime.fromisoformat(again["expires_at"]) >= expires


def test_only_the_uploader_or_an_admin_may_resume_or_complete(
    client: Client, aws: str, personas: Any
) -> None:
    other = get_user_model().objects.create_user(username="deployer2", password="x")
    user_set_role(user=other, role="deployer")
    data = b"z" * 1000
    plan = start(client, personas["deployer"], len(data)).json()
    path = f"iris/uploads/{plan['upload_id']}"
    refused = api(client, "get", path, other)
    assert refused.status_code == 403 and "only the user who started" in refused.json()["detail"]
    assert "parts" not in refused.json()  # no fresh URLs for a stranger
    etag = httpx.put(plan["parts"][0]["url"], content=data).headers["ETag"]
    body = {"parts": [{"part_number": 1, "etag": etag}], "sha256": hashlib.sha256(data).hexdigest()}
    assert api(client, "post", f"{path}/complete", other, body).status_code == 403
    assert Upload.objects.get().state == "active"
    assert api(client, "get", path, personas["admin"]).status_code == 200
    assert api(client, "post", f"{path}/complete", personas["admin"], body).status_code == 201


def test_complete_never_overwrites_an_object_that_appeared(
    client: Client, aws: str, personas: Any, tmp_path: Path
) -> None:
    data = b"n" * 1000
    plan = start(client, personas["deployer"], len(data)).json()
    etag = httpx.put(plan["parts"][0]["url"], content=data).headers["ETag"]
    # another tool writes the same key while the upload runs
    theirs = write_artifact(tmp_path / "theirs.pt", 77)
    their_version = s3.put_file(bucket="test-models", key="models/iris/1.0/model.pt", path=theirs)
    done = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": [{"part_number": 1, "etag": etag}], "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert done.status_code == 409 and "was kept" in done.json()["detail"]
    head = s3.head_object(bucket="test-models", key="models/iris/1.0/model.pt")
    assert head is not None and head.size == 77 and head.version_id == their_version
    assert Upload.objects.get().state == "aborted"
    assert list(s3.iter_multipart_uploads(bucket="test-models", prefix="models/")) == []


def test_complete_never_overwrites_a_manifest_that_appeared(
    client: Client, aws: str, personas: Any
) -> None:
    data = b"m" * 1000
    plan = start(client, personas["deployer"], len(data)).json()
    etag = httpx.put(plan["parts"][0]["url"], content=data).headers["ETag"]
    s3.put_json(bucket="test-models", key="models/iris/1.0/manifest.json", document={"x": 1})
    done = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": [{"part_number": 1, "etag": etag}], "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert done.status_code == 409 and "manifest.json appeared" in done.json()["detail"]
    assert s3.get_json(bucket="test-models", key="models/iris/1.0/manifest.json") == {"x": 1}
    # nothing half-written: our artifact is gone, the name is not held
    assert s3.head_object(bucket="test-models", key="models/iris/1.0/model.pt") is None
    assert not ModelVersion.objects.filter(status="uploading").exists()


def test_publish_never_overwrites(aws: str, db: Any, tmp_path: Path) -> None:
    """The check-then-write race in version_publish is closed by S3 itself:
    the conditional PUT refuses a key that exists (moto 5.2.5 implements
    If-None-Match: * on PutObject and CompleteMultipartUpload)."""
    existing = write_artifact(tmp_path / "x.pt", 10)
    s3.put_file(
        bucket="test-models", key="models/iris/9.0/model.pt", path=existing, only_if_absent=True
    )
    with pytest.raises(AwsAlreadyExistsError, match="PreconditionFailed"):
        s3.put_file(
            bucket="test-models", key="models/iris/9.0/model.pt", path=existing, only_if_absent=True
        )


def test_a_deleted_versions_name_is_never_reused(
    client: Client, aws: str, personas: Any, tmp_path: Path
) -> None:
    publish("iris", "1.0", tmp_path)
    version_delete(version=ModelVersion.objects.get(version="1.0"), user=personas["deployer"])
    tomb = DeletedVersion.objects.get(model_name="iris", version="1.0")
    assert tomb.deleted_by == "deployer" and len(tomb.sha256) == 64
    # not by upload...
    refused = start(client, personas["deployer"], 10)
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "was deleted on" in detail and "never reused" in detail
    # ...nor by publishing...
    with pytest.raises(VersionExists, match="never reused"):
        publish("iris", "1.0", tmp_path)
    # ...nor by dropping a folder under the old name into S3 behind our back
    dropped = write_artifact(tmp_path / "dropped.pt", 50)
    s3.put_file(bucket="test-models", key="models/iris/1.0/model.pt", path=dropped)
    registry_sync(model="iris")
    row = ModelVersion.objects.get(version="1.0")
    assert row.status == "invalid" and "cannot be reused" in row.status_detail
    # other names are fine
    assert start(client, personas["deployer"], 10, version="1.1").status_code == 201


def test_upload_origin_is_where_the_part_urls_point(aws: str) -> None:
    url = s3.presign_upload_part(
        bucket="test-models",
        key="models/iris/1.0/model.pt",
        upload_id="u",
        part_number=1,
        content_length=1,
        expires_in=60,
    )
    assert url.startswith(s3.upload_origin(bucket="test-models") + "/")
    assert os.environ["AWS_ENDPOINT_URL"] == s3.upload_origin(bucket="test-models")
