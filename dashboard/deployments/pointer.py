"""The promoted-version pointer (CONTRACT.md section 2)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import orjson

from dashboard.registry.manifest import (
    FORMATS,
    ManifestError,
    validate_artifact_name,
    validate_input_signature,
    validate_sha256,
)
from dashboard.registry.models import ModelVersion
from dashboard.registry.names import (
    InvalidName,
    validate_model_name,
    validate_version_name,
    version_prefix,
)

logger = logging.getLogger(__name__)


class PointerError(ValueError):
    """The version cannot be pointed at (no manifest, no S3 version id...)."""


def pointer_build(
    *, info: ModelVersion, bucket: str, promoted_by: str, reason: str, now: dt.datetime
) -> dict[str, Any]:
    """The pointer document pinning ``info``'s artifact by S3 version id and SHA-256."""
    if not info.sha256 or not info.input_shape:
        raise PointerError(f"version {info.version} has no manifest to pin")
    if not info.s3_version_id or info.s3_version_id == "null":
        raise PointerError(
            f"the artifact of {info.version} has no S3 version id: enable versioning on the bucket"
        )
    return {
        "schema": 1,
        "model": info.model_name,
        "version": info.version,
        "bucket": bucket,
        "key": info.key,
        "s3_version_id": info.s3_version_id,
        "sha256": info.sha256,
        "size": info.size,
        "format": info.format,
        "input": {"shape": info.input_shape, "dtype": info.input_dtype},
        "promoted_by": promoted_by,
        "promoted_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": reason,
    }


def pointer_dumps(pointer: dict[str, Any]) -> str:
    return orjson.dumps(pointer).decode()


class PointerInvalid(PointerError):
    """A stored pointer that does not follow the contract (CONTRACT.md section 2)."""


# S3 version ids are opaque but URL-safe base64-like text ("null" for objects
# written before versioning: such a pointer pins nothing).
_S3_VERSION_ID_RE = re.compile(r"[A-Za-z0-9._+/=-]{1,1024}", re.ASCII)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
# Characters that have no business in a name or a one-line reason: C0/C1
# controls, and the bidi overrides that make text read differently than it is.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_REASON = 500
MAX_PROMOTED_BY = 150


def _text(value: object, *, limit: int) -> str:
    """Free text from a pointer, neutralised: controls dropped, length bounded."""
    if not isinstance(value, str):
        return ""
    return _CONTROL_RE.sub("", value)[:limit]


def pointer_parse(value: str, *, model: str | None = None) -> dict[str, Any]:
    """Parse and check a stored pointer; return only the contract's fields.

    Everything a page or a deployment may show or act on is checked like the
    names it stands for (model, version, key, ...); free text (who promoted it
    and why) is stripped of control characters and bounded. Raises
    PointerInvalid naming the first field that breaks the contract (the
    field's value is not repeated: it may be anything).
    """
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PointerInvalid("the pointer is not JSON") from exc
    if not isinstance(data, dict):
        raise PointerInvalid("the pointer is not a JSON object")
    if data.get("schema") != 1:
        raise PointerInvalid("the pointer's schema must be 1")
    # Everything that says what it serves; promoted_by, promoted_at and reason are optional.
    missing = [field for field in PINNED_FIELDS if field not in data]
    if missing:
        raise PointerInvalid(f"the pointer lacks {', '.join(missing)}")
    try:
        name = validate_model_name(data.get("model"))
    except InvalidName as exc:
        raise PointerInvalid("the pointer's model is not a valid model name") from exc
    try:
        version = validate_version_name(data.get("version"))
    except InvalidName as exc:
        raise PointerInvalid("the pointer's version is not a valid version name") from exc
    if model is not None and name != model:
        raise PointerInvalid(f"the pointer names another model than {model}")
    bucket = data.get("bucket")
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise PointerInvalid("the pointer's bucket is not an S3 bucket name")
    key = data.get("key")
    artifact = key.rpartition("/")[2] if isinstance(key, str) else ""
    try:
        validate_artifact_name(artifact)
    except ManifestError as exc:
        raise PointerInvalid("the pointer's key does not name an artifact file") from exc
    if key != version_prefix(name, version) + artifact:
        raise PointerInvalid("the pointer's key is not under models/<model>/<version>/")
    version_id = data.get("s3_version_id")
    if not isinstance(version_id, str) or not _S3_VERSION_ID_RE.fullmatch(version_id):
        raise PointerInvalid("the pointer's s3_version_id is not an S3 version id")
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PointerInvalid("the pointer's size must be a non-negative integer")
    if data.get("format") not in FORMATS:
        raise PointerInvalid(f"the pointer's format must be one of {', '.join(FORMATS)}")
    raw_input = data.get("input")
    try:
        sha256 = validate_sha256(data.get("sha256"))
        if not isinstance(raw_input, dict):
            raise ManifestError("input must be an object with shape and dtype")
        shape, dtype = validate_input_signature(raw_input.get("shape"), raw_input.get("dtype"))
    except ManifestError as exc:
        raise PointerInvalid(f"the pointer's {exc}") from exc
    promoted_at = data.get("promoted_at", "")
    if not isinstance(promoted_at, str) or len(promoted_at) > 40:
        raise PointerInvalid("the pointer's promoted_at must be an ISO 8601 timestamp")
    if promoted_at:
        try:
            dt.datetime.fromisoformat(promoted_at)
        except ValueError as exc:
            raise PointerInvalid("the pointer's promoted_at must be an ISO 8601 timestamp") from exc
    return {
        "schema": 1,
        "model": name,
        "version": version,
        "bucket": bucket,
        "key": key,
        "s3_version_id": version_id,
        "sha256": sha256,
        "size": size,
        "format": data["format"],
        "input": {"shape": shape, "dtype": dtype},
        "promoted_by": _text(data.get("promoted_by"), limit=MAX_PROMOTED_BY),
        "promoted_at": promoted_at,
        "reason": _text(data.get("reason"), limit=MAX_REASON),
    }


def pointer_loads(value: str | None, *, model: str | None = None) -> dict[str, Any] | None:
    """Parse a stored pointer; None for a missing one or one that breaks the
    contract (logged with the reason; pointer_parse gives the reason)."""
    if not value:
        return None
    try:
        return pointer_parse(value, model=model)
    except PointerInvalid as exc:
        logger.warning("ignoring an invalid pointer: %s", exc)
        return None


# The fields that say WHAT a pointer serves; the rest (who, when, why) is its story.
PINNED_FIELDS = (
    "schema",
    "model",
    "version",
    "bucket",
    "key",
    "s3_version_id",
    "sha256",
    "size",
    "format",
    "input",
)


def pointer_same_artifact(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """True when both pointers pin the same artifact (version, object version, SHA-256)."""
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) for k in ("version", "sha256", "s3_version_id", "key"))


def pointer_restamp(
    pointer: dict[str, Any], *, promoted_by: str, reason: str, now: dt.datetime
) -> dict[str, Any]:
    """``pointer`` exactly as pinned (same object version and SHA-256), with a
    new story: who redeploys it, when and why (rollbacks)."""
    return {
        **{k: pointer[k] for k in PINNED_FIELDS if k in pointer},
        "promoted_by": promoted_by,
        "promoted_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": reason,
    }


def pin_parse(pin: str | None) -> tuple[str, int | None]:
    """Split a MODEL_SSM_PARAMETER value into (parameter name, version or None)."""
    if not pin:
        return "", None
    name, sep, selector = pin.rpartition(":")
    if sep and selector.isdigit() and name:
        return name, int(selector)
    return pin, None
