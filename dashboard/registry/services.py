"""Writes to the model registry."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

from django.conf import settings

from dashboard.aws import s3
from dashboard.aws.errors import AwsError
from dashboard.registry.manifest import (
    FORMATS,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    validate_artifact_name,
    validate_input_signature,
)
from dashboard.registry.names import validate_model_name, validate_version_name, version_prefix


class VersionExists(ValueError):
    """The version folder already holds objects; versions are immutable."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def version_publish(
    *,
    model: str,
    version: str,
    path: Path,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    created_by: str,
    notes: str = "",
    metrics: dict[str, float] | None = None,
    artifact: str | None = None,
) -> Manifest:
    """Upload a local artifact and its manifest as a new version.

    Used by the local stack's seed and the command line; browsers upload
    straight to S3 instead. Either both objects land or neither does.
    """
    validate_model_name(model)
    validate_version_name(version)
    artifact = validate_artifact_name(artifact or path.name)
    if format not in FORMATS:
        raise ManifestError(f"format must be one of {', '.join(FORMATS)}")
    shape, dtype = validate_input_signature(input_shape, input_dtype)
    bucket = settings.MODELS_BUCKET
    base = version_prefix(model, version)
    if any(True for _ in s3.iter_objects(bucket=bucket, prefix=base)):
        raise VersionExists(f"version {version} of {model} already exists")
    sha256 = file_sha256(path)
    manifest = Manifest(
        model=model,
        version=version,
        artifact=artifact,
        format=format,
        sha256=sha256,
        size=path.stat().st_size,
        input_shape=shape,
        input_dtype=dtype,
        created_at=dt.datetime.now(dt.UTC),
        created_by=created_by,
        notes=notes,
        metrics=metrics or {},
    )
    checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
    s3.put_file(bucket=bucket, key=base + artifact, path=path, sha256_b64=checksum)
    try:
        s3.put_json(bucket=bucket, key=base + MANIFEST_FILE, document=manifest.to_dict())
    except AwsError:
        s3.delete_object(bucket=bucket, key=base + artifact)
        raise
    return manifest
