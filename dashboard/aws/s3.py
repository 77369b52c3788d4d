"""Amazon S3: the model artifacts and their manifests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import orjson

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsError, AwsNotFoundError, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _s3() -> S3Client:
    return cast("S3Client", client("s3"))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime
    etag: str = ""
    version_id: str | None = None


def iter_objects(*, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """Yield every current object under ``prefix`` (all pages, 1000 keys a call)."""
    try:
        paginator = _s3().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    last_modified=item["LastModified"],
                    etag=str(item.get("ETag", "")).strip('"'),
                )
    except Exception as exc:
        raise translate(exc, operation="ListObjectsV2") from exc


def list_prefixes(*, bucket: str, prefix: str) -> list[str]:
    """Return the "folders" directly under ``prefix`` (each ends with ``/``)."""
    try:
        paginator = _s3().get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []) if "Prefix" in p)
        return found
    except Exception as exc:
        raise translate(exc, operation="ListObjectsV2") from exc


def head_object(*, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo | None:
    """Return the object's current (or given) version, or None when it does not exist."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        response = _s3().head_object(**kwargs)
    except Exception as exc:
        error = translate(exc, operation="HeadObject")
        if isinstance(error, AwsNotFoundError):
            return None
        raise error from exc
    return ObjectInfo(
        key=key,
        size=int(response.get("ContentLength", 0)),
        last_modified=response["LastModified"],
        etag=str(response.get("ETag", "")).strip('"'),
        version_id=response.get("VersionId"),
    )


def get_json(*, bucket: str, key: str) -> Any | None:
    """Return the parsed JSON document at ``key``, or None when there is none.

    Raises AwsError when the object exists but is not JSON.
    """
    try:
        response = _s3().get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
    except Exception as exc:
        error = translate(exc, operation="GetObject")
        if isinstance(error, AwsNotFoundError):
            return None
        raise error from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AwsError(f"s3://{bucket}/{key} is not valid JSON: {exc}") from exc


def _if_absent(only_if_absent: bool) -> dict[str, Any]:
    # S3's conditional write: 412 PreconditionFailed when the key has a
    # current object, so nothing that exists is ever overwritten (a key whose
    # current version is a delete marker counts as absent).
    return {"IfNoneMatch": "*"} if only_if_absent else {}


def put_json(*, bucket: str, key: str, document: Any, only_if_absent: bool = False) -> str | None:
    """Write ``document`` as JSON; return the new object's version id.

    With ``only_if_absent`` an existing object is left alone and
    AwsAlreadyExistsError is raised.
    """
    try:
        response = _s3().put_object(
            Bucket=bucket,
            Key=key,
            Body=orjson.dumps(document, option=orjson.OPT_INDENT_2),
            ContentType="application/json",
            **_if_absent(only_if_absent),
        )
    except Exception as exc:
        raise translate(exc, operation="PutObject") from exc
    return response.get("VersionId")


def put_file(
    *,
    bucket: str,
    key: str,
    path: Path,
    sha256_b64: str | None = None,
    only_if_absent: bool = False,
) -> str | None:
    """Upload a local file in one PUT (small files: the demo model, tests);
    with ``sha256_b64`` S3 verifies the bytes it stored; with
    ``only_if_absent`` an existing object is never replaced
    (AwsAlreadyExistsError). Return the version id."""
    kwargs: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "ContentType": "application/octet-stream",
        **_if_absent(only_if_absent),
    }
    if sha256_b64:
        kwargs["ChecksumSHA256"] = sha256_b64
    try:
        with path.open("rb") as body:
            response = _s3().put_object(Body=body, **kwargs)
    except Exception as exc:
        raise translate(exc, operation="PutObject") from exc
    return response.get("VersionId")


def delete_object(*, bucket: str, key: str) -> None:
    """Delete the current version of ``key`` (bucket versioning keeps the bytes)."""
    try:
        _s3().delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise translate(exc, operation="DeleteObject") from exc


# --- Multipart uploads (browser uploads go straight to S3) -----------------


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    etag: str
    size: int


@dataclass(frozen=True)
class MultipartUploadInfo:
    key: str
    upload_id: str
    initiated: dt.datetime


def create_multipart_upload(*, bucket: str, key: str, content_type: str) -> str:
    """Start a multipart upload; return its upload id."""
    try:
        response = _s3().create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
    except Exception as exc:
        raise translate(exc, operation="CreateMultipartUpload") from exc
    return response["UploadId"]


def presign_upload_part(
    *,
    bucket: str,
    key: str,
    upload_id: str,
    part_number: int,
    content_length: int,
    expires_in: int,
) -> str:
    """A URL the browser PUTs one part to, valid for ``expires_in`` seconds.

    The signature covers ``Content-Length`` (SignedHeaders
    ``content-length;host``): S3 refuses a PUT of any other size, so a URL
    handed out for one part cannot be used to store more than that part.
    """
    try:
        return _s3().generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": part_number,
                "ContentLength": content_length,
            },
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )
    except Exception as exc:
        raise translate(exc, operation="UploadPart (presign)") from exc


def upload_origin(*, bucket: str) -> str:
    """The origin (scheme://host[:port]) that presigned URLs for ``bucket``
    point at: what a browser page must be allowed to connect to. Signing is
    local: no request is sent."""
    try:
        url = _s3().generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "models/"}, ExpiresIn=60
        )
    except Exception as exc:
        raise translate(exc, operation="PutObject (presign)") from exc
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def list_parts(*, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
    """The parts S3 already holds for the upload (all pages), by part number."""
    parts: list[PartInfo] = []
    marker = 0
    try:
        while True:
            response = _s3().list_parts(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
            for part in response.get("Parts", []):
                parts.append(
                    PartInfo(
                        part_number=int(part["PartNumber"]),
                        etag=str(part.get("ETag", "")),
                        size=int(part.get("Size", 0)),
                    )
                )
            if not response.get("IsTruncated"):
                return parts
            marker = int(response.get("NextPartNumberMarker", 0))
    except Exception as exc:
        raise translate(exc, operation="ListParts") from exc


def complete_multipart_upload(
    *, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
) -> str | None:
    """Assemble the object from ``parts`` ((number, etag), ascending); return
    its version id. Conditional: if ``key`` already holds an object, S3 keeps
    it and AwsAlreadyExistsError is raised (the upload stays open)."""
    try:
        response = _s3().complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            IfNoneMatch="*",
        )
    except Exception as exc:
        raise translate(exc, operation="CompleteMultipartUpload") from exc
    return response.get("VersionId")


def abort_multipart_upload(*, bucket: str, key: str, upload_id: str) -> None:
    """Abort an upload and free its parts; an upload that is already gone is fine."""
    try:
        _s3().abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:
        error = translate(exc, operation="AbortMultipartUpload")
        if error.code in {"NoSuchUpload"} or isinstance(error, AwsNotFoundError):
            return
        raise error from exc


def iter_multipart_uploads(*, bucket: str, prefix: str) -> Iterator[MultipartUploadInfo]:
    """Every multipart upload in progress under ``prefix``."""
    try:
        paginator = _s3().get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Uploads", []):
                yield MultipartUploadInfo(
                    key=item["Key"], upload_id=item["UploadId"], initiated=item["Initiated"]
                )
    except Exception as exc:
        raise translate(exc, operation="ListMultipartUploads") from exc


def presign_get_object(*, bucket: str, key: str, version_id: str | None, expires_in: int) -> str:
    """A URL that GETs one object version, valid for ``expires_in`` seconds: the
    validation worker downloads with it and so needs no credentials of its own."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    try:
        return _s3().generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in, HttpMethod="GET"
        )
    except Exception as exc:
        raise translate(exc, operation="GetObject (presign)") from exc
