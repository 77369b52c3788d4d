"""Reads of the model registry. S3 is the source of truth.

Listing a model costs one ListObjectsV2 call per 1000 objects plus one
manifest GET per version *on the requested page*, never one per version.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.aws import s3
from dashboard.aws.errors import AwsError
from dashboard.registry.manifest import MANIFEST_FILE, Manifest, ManifestError, format_for_filename
from dashboard.registry.names import model_prefix, validate_model_name, version_prefix


@dataclass
class VersionInfo:
    """One version folder in S3, with what its manifest says (or what it lacks)."""

    model: str
    version: str
    artifact: str
    key: str
    format: str
    size: int
    last_modified: dt.datetime
    status: str  # valid | invalid (validation in a worker arrives with the registry gate)
    status_detail: str = ""
    sha256: str | None = None
    s3_version_id: str | None = None
    input_shape: list[int] | None = None
    input_dtype: str | None = None
    created_at: dt.datetime | None = None
    created_by: str = ""
    notes: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    has_manifest: bool = False

    @property
    def promotable(self) -> bool:
        return self.status == "valid"

    @property
    def input_signature(self) -> str:
        if self.input_shape is None:
            return ""
        return f"{self.input_dtype}[{', '.join(str(d) for d in self.input_shape)}]"


@dataclass(frozen=True)
class VersionFolder:
    version: str
    objects: dict[str, s3.ObjectInfo]

    @property
    def last_modified(self) -> dt.datetime:
        return max(o.last_modified for o in self.objects.values())


@dataclass(frozen=True)
class Page:
    items: list[VersionInfo]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def model_list() -> list[str]:
    """Names of the models that have a folder in the bucket, sorted."""
    prefixes = s3.list_prefixes(bucket=settings.MODELS_BUCKET, prefix="models/")
    names = []
    for prefix in prefixes:
        name = prefix[len("models/") : -1]
        try:
            names.append(validate_model_name(name))
        except ValueError:
            continue  # a folder that is not a valid model name is not ours to list
    return sorted(names)


def _folders(model: str) -> list[VersionFolder]:
    prefix = model_prefix(model)
    grouped: dict[str, dict[str, s3.ObjectInfo]] = defaultdict(dict)
    for obj in s3.iter_objects(bucket=settings.MODELS_BUCKET, prefix=prefix):
        rest = obj.key[len(prefix) :]
        version, sep, filename = rest.partition("/")
        if not sep or not filename or "/" in filename:
            continue
        grouped[version][filename] = obj
    folders = []
    for version, objects in grouped.items():
        try:
            version_prefix(model, version)
        except ValueError:
            continue
        folders.append(VersionFolder(version=version, objects=objects))
    # Newest first, by the time the folder was last written.
    folders.sort(key=lambda f: (f.last_modified, f.version), reverse=True)
    return folders


def _describe(model: str, folder: VersionFolder) -> VersionInfo:
    bucket = settings.MODELS_BUCKET
    base = version_prefix(model, folder.version)
    manifest_obj = folder.objects.get(MANIFEST_FILE)
    artifacts = {name: o for name, o in folder.objects.items() if name != MANIFEST_FILE}
    if manifest_obj is not None:
        try:
            manifest = Manifest.from_dict(s3.get_json(bucket=bucket, key=base + MANIFEST_FILE))
        except (ManifestError, AwsError) as exc:
            return _without_manifest(model, folder, artifacts, f"manifest.json is unusable: {exc}")
        artifact = artifacts.get(manifest.artifact)
        info = VersionInfo(
            model=model,
            version=folder.version,
            artifact=manifest.artifact,
            key=base + manifest.artifact,
            format=manifest.format,
            size=manifest.size,
            last_modified=folder.last_modified,
            status="valid",
            sha256=manifest.sha256,
            input_shape=manifest.input_shape,
            input_dtype=manifest.input_dtype,
            created_at=manifest.created_at,
            created_by=manifest.created_by,
            notes=manifest.notes,
            metrics=manifest.metrics,
            has_manifest=True,
        )
        if manifest.model != model or manifest.version != folder.version:
            info.status, info.status_detail = "invalid", "manifest names another model/version"
        elif artifact is None:
            info.status, info.status_detail = "invalid", f"artifact {manifest.artifact} is missing"
        elif artifact.size != manifest.size:
            info.status = "invalid"
            info.status_detail = (
                f"artifact is {artifact.size} bytes in S3 but the manifest says {manifest.size}"
            )
        return info
    return _without_manifest(model, folder, artifacts, "no manifest.json")


def _without_manifest(
    model: str, folder: VersionFolder, artifacts: dict[str, s3.ObjectInfo], why: str
) -> VersionInfo:
    """A folder another tool dropped into S3: describe what can be seen without
    reading the artifact (its SHA-256 needs a full read, done by a worker)."""
    base = version_prefix(model, folder.version)
    name = sorted(artifacts)[0] if artifacts else ""
    obj = artifacts.get(name)
    return VersionInfo(
        model=model,
        version=folder.version,
        artifact=name,
        key=base + name,
        format=format_for_filename(name),
        size=obj.size if obj else 0,
        last_modified=folder.last_modified,
        created_at=obj.last_modified if obj else None,
        status="invalid",
        status_detail=f"{why}; it cannot be promoted until it has a verified manifest",
    )


def version_page(*, model: str, page: int = 1, page_size: int = 50) -> Page:
    """One page of the model's versions, newest first."""
    folders = _folders(model)
    start = (page - 1) * page_size
    items = [_describe(model, f) for f in folders[start : start + page_size]]
    return Page(items=items, page=page, page_size=page_size, total=len(folders))


def version_get(*, model: str, version: str) -> VersionInfo | None:
    """The version with its artifact's current S3 version id, or None if it
    does not exist."""
    bucket = settings.MODELS_BUCKET
    base = version_prefix(model, version)
    objects = {
        o.key[len(base) :]: o
        for o in s3.iter_objects(bucket=bucket, prefix=base)
        if "/" not in o.key[len(base) :]
    }
    if not objects:
        return None
    info = _describe(model, VersionFolder(version=version, objects=objects))
    if info.artifact:
        head = s3.head_object(bucket=bucket, key=info.key)
        if head is not None:
            info.s3_version_id = head.version_id
    return info


def version_as_dict(info: VersionInfo, *, environments: list[str]) -> dict[str, Any]:
    return {
        "version": info.version,
        "artifact": info.artifact,
        "format": info.format,
        "size": info.size,
        "sha256": info.sha256,
        "input": (
            {"shape": info.input_shape, "dtype": info.input_dtype}
            if info.input_shape is not None
            else None
        ),
        "status": info.status,
        "status_detail": info.status_detail,
        "created_at": info.created_at,
        "created_by": info.created_by,
        "notes": info.notes,
        "metrics": info.metrics,
        "environments": environments,
    }


def model_exists(*, model: str) -> bool:
    """True when the bucket holds anything under models/<model>/."""
    for _ in s3.iter_objects(bucket=settings.MODELS_BUCKET, prefix=model_prefix(model)):
        return True
    return False
