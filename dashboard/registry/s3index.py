"""What the bucket holds: version folders under models/<model>/<version>/.

Used by the registry sync (services.registry_sync), which keeps the database
index in step with S3. Scanning costs one ListObjectsV2 call per 1000 objects;
describing a folder costs a manifest GET and an artifact HEAD, and is only
done for folders that are new or changed since the last sync.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings

from dashboard.aws import s3
from dashboard.aws.errors import AwsError
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


def describe(folder: VersionFolder) -> VersionInfo:
    """Read the folder's manifest (if any). The artifact's S3 version is pinned
    by validation, from the very download it checks (one request per folder
    here instead of two)."""
    info = _describe(folder)
    info.fingerprint = folder.fingerprint
    return info


def _describe(folder: VersionFolder) -> VersionInfo:
    base = version_prefix(folder.model, folder.version)
    artifacts = {name: o for name, o in folder.objects.items() if name != MANIFEST_FILE}
    if MANIFEST_FILE not in folder.objects:
        return _without_manifest(folder, artifacts)
    try:
        document = s3.get_json(bucket=settings.MODELS_BUCKET, key=base + MANIFEST_FILE)
        manifest = Manifest.from_dict(document)
    except (ManifestError, AwsError) as exc:
        info = _without_manifest(folder, artifacts)
        info.status, info.status_detail = "invalid", f"manifest.json is unusable: {exc}"
        return info
    artifact = artifacts.get(manifest.artifact)
    info = VersionInfo(
        model=folder.model,
        version=folder.version,
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
    if manifest.model != folder.model or manifest.version != folder.version:
        info.status = "invalid"
        info.status_detail = (
            f"manifest.json describes {manifest.model} {manifest.version}, not this folder"
        )
    elif artifact is None:
        info.status, info.status_detail = "invalid", f"artifact {manifest.artifact} is missing"
    elif artifact.size != manifest.size:
        info.status = "invalid"
        info.status_detail = (
            f"artifact is {artifact.size} bytes in S3 but manifest.json says {manifest.size}"
        )
    return info


def _without_manifest(folder: VersionFolder, artifacts: dict[str, s3.ObjectInfo]) -> VersionInfo:
    """A folder another tool dropped into S3 (e.g. `aws s3 cp` from training).

    Its SHA-256 is computed by a worker; its input signature cannot be known,
    so it cannot be validated or served until someone declares it.
    """
    base = version_prefix(folder.model, folder.version)
    candidates = sorted(
        artifacts, key=lambda n: (not n.endswith(ARTIFACT_SUFFIXES), -artifacts[n].size, n)
    )
    name = candidates[0] if candidates else ""
    obj = artifacts.get(name)
    if obj is None:
        detail = "the folder holds no artifact"
    else:
        detail = (
            "no manifest.json: the input signature (shape and dtype) is unknown; "
            "declare it on the version's page to validate it"
        )
    return VersionInfo(
        model=folder.model,
        version=folder.version,
        artifact=name,
        key=base + name if name else "",
        format=format_for_filename(name),
        size=obj.size if obj else 0,
        created_at=obj.last_modified if obj else folder.last_modified,
        status="invalid",
        status_detail=detail,
    )
