"""What the bucket holds: version folders under models/<model>/<version>/.

Used by the registry sync (services.registry_sync), which keeps the database
index in step with S3. Scanning costs one ListObjectsV2 call per 1000 objects,
and the sync indexes new or changed folders from that listing alone
(:func:`from_listing`); reading a folder's manifest.json costs one GET and is
done later by a worker (:func:`from_manifest`), many folders per task.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.aws import s3
from dashboard.registry.manifest import MANIFEST_FILE, Manifest, ManifestError, format_for_filename
from dashboard.registry.names import validate_model_name, validate_version_name, version_prefix

ARTIFACT_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".torchscript")


@dataclass(frozen=True)
class VersionFolder:
    model: str
    version: str
    objects: dict[str, s3.ObjectInfo]

    @property
    def last_modified(self) -> dt.datetime:
        return max(o.last_modified for o in self.objects.values())

    @property
    def fingerprint(self) -> str:
        """Changes whenever an object of the folder is added, removed or rewritten."""
        digest = hashlib.sha256()
        for name in sorted(self.objects):
            o = self.objects[name]
            digest.update(f"{name}\0{o.size}\0{o.etag}\0{o.last_modified.isoformat()}\n".encode())
        return digest.hexdigest()


@dataclass
class VersionInfo:
    """One version folder in S3, with what its manifest says (or lacks)."""

    model: str
    version: str
    artifact: str
    key: str
    format: str
    size: int
    status: str  # validating (ready to validate) | invalid (cannot be)
    status_detail: str = ""
    sha256: str = ""
    s3_version_id: str = ""
    input_shape: list[int] | None = None
    input_dtype: str = ""
    created_at: dt.datetime | None = None
    created_by: str = ""
    notes: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    has_manifest: bool = False
    fingerprint: str = ""
    files: dict[str, int] = field(default_factory=dict)  # name -> size, from the listing
    manifest_pending: bool = False  # its manifest.json is still to be read


def folder_fingerprint(*, model: str, version: str) -> str:
    """The fingerprint the sync will compute for one folder (one LIST call),
    recorded by whoever writes a folder so the next sync sees it unchanged."""
    base = version_prefix(model, version)
    objects = {
        obj.key[len(base) :]: obj
        for obj in s3.iter_objects(bucket=settings.MODELS_BUCKET, prefix=base)
        if "/" not in obj.key[len(base) :]
    }
    return VersionFolder(model=model, version=version, objects=objects).fingerprint


def scan(*, model: str | None = None) -> dict[tuple[str, str], VersionFolder]:
    """Every valid version folder under models/ (or under one model)."""
    prefix = f"models/{validate_model_name(model)}/" if model else "models/"
    grouped: dict[tuple[str, str], dict[str, s3.ObjectInfo]] = defaultdict(dict)
    for obj in s3.iter_objects(bucket=settings.MODELS_BUCKET, prefix=prefix):
        parts = obj.key.split("/")
        if len(parts) != 4 or not parts[3]:
            continue  # not models/<model>/<version>/<file>
        _, model_name, version, filename = parts
        grouped[(model_name, version)][filename] = obj
    folders = {}
    for (model_name, version), objects in grouped.items():
        try:
            validate_model_name(model_name)
            validate_version_name(version)
        except ValueError:
            continue  # never turn a name the contract forbids into a row
        folders[(model_name, version)] = VersionFolder(model_name, version, objects)
    return folders


def from_listing(folder: VersionFolder) -> VersionInfo:
    """What the listing alone says about ``folder``.

    A folder without manifest.json is fully described by it. One with a
    manifest gets ``manifest_pending``: status ``validating`` and the largest
    artifact-looking file as a placeholder until :func:`from_manifest` runs
    (the sync queues that for a worker).
    """
    artifacts = {name: o for name, o in folder.objects.items() if name != MANIFEST_FILE}
    info = _without_manifest(folder, artifacts)
    if MANIFEST_FILE in folder.objects:
        info.status, info.status_detail = "validating", "reading manifest.json"
        info.has_manifest = info.manifest_pending = True
    info.fingerprint = folder.fingerprint
    info.files = {name: o.size for name, o in folder.objects.items()}
    return info


def read_manifest(*, model: str, version: str) -> Any:
    """The folder's manifest.json document (None if it is gone). Raises
    AwsError (transient ones are worth retrying) or, for a file that is not
    JSON, AwsError too."""
    return s3.get_json(
        bucket=settings.MODELS_BUCKET, key=version_prefix(model, version) + MANIFEST_FILE
    )


def from_manifest(
    *,
    model: str,
    version: str,
    files: dict[str, int],
    created_at: dt.datetime,
    document: Any,
    error: str = "",
) -> VersionInfo:
    """What the folder's manifest ``document`` says, checked against the files
    the listing saw (``files``: name -> size). ``error`` is why the manifest
    could not be read; a manifest that lies about its folder or its artifact
    makes the version ``invalid`` with the reason."""
    base = version_prefix(model, version)
    artifact_sizes = {name: size for name, size in files.items() if name != MANIFEST_FILE}

    def unusable(reason: str) -> VersionInfo:
        info = _placeholder(model, version, artifact_sizes, created_at)
        info.status, info.status_detail = "invalid", f"manifest.json is unusable: {reason}"
        return info

    if error:
        return unusable(error)
    if document is None:
        return unusable("it disappeared from S3 (the next sync will notice)")
    try:
        manifest = Manifest.from_dict(document)
    except ManifestError as exc:
        return unusable(str(exc))
    info = VersionInfo(
        model=model,
        version=version,
        artifact=manifest.artifact,
        key=base + manifest.artifact,
        format=manifest.format,
        size=manifest.size,
        status="validating",
        sha256=manifest.sha256,
        input_shape=manifest.input_shape,
        input_dtype=manifest.input_dtype,
        created_at=manifest.created_at,
        created_by=manifest.created_by,
        notes=manifest.notes,
        metrics=manifest.metrics,
        has_manifest=True,
    )
    size = artifact_sizes.get(manifest.artifact)
    if manifest.model != model or manifest.version != version:
        info.status = "invalid"
        info.status_detail = (
            f"manifest.json describes {manifest.model} {manifest.version}, not this folder"
        )
    elif size is None:
        info.status, info.status_detail = "invalid", f"artifact {manifest.artifact} is missing"
    elif size != manifest.size:
        info.status = "invalid"
        info.status_detail = (
            f"artifact is {size} bytes in S3 but manifest.json says {manifest.size}"
        )
    return info


def _placeholder(
    model: str, version: str, sizes: dict[str, int], created_at: dt.datetime
) -> VersionInfo:
    """The largest artifact-looking file of a folder, as the version's artifact."""
    base = version_prefix(model, version)
    candidates = sorted(sizes, key=lambda n: (not n.endswith(ARTIFACT_SUFFIXES), -sizes[n], n))
    name = candidates[0] if candidates else ""
    return VersionInfo(
        model=model,
        version=version,
        artifact=name,
        key=base + name if name else "",
        format=format_for_filename(name),
        size=sizes.get(name, 0),
        created_at=created_at,
        status="invalid",
        status_detail="",
    )


def _without_manifest(folder: VersionFolder, artifacts: dict[str, s3.ObjectInfo]) -> VersionInfo:
    """A folder another tool dropped into S3 (e.g. `aws s3 cp` from training).

    Its SHA-256 is computed by a worker; its input signature cannot be known,
    so it cannot be validated or served until someone declares it.
    """
    sizes = {name: o.size for name, o in artifacts.items()}
    info = _placeholder(folder.model, folder.version, sizes, folder.last_modified)
    if info.artifact:
        info.created_at = artifacts[info.artifact].last_modified
        info.status_detail = (
            "no manifest.json: the input signature (shape and dtype) is unknown; "
            "declare it on the version's page to validate it"
        )
    else:
        info.status_detail = "the folder holds no artifact"
    return info
