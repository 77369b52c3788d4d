"""The promoted-version pointer (CONTRACT.md section 2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from dashboard.registry.models import ModelVersion


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


def pointer_loads(value: str | None) -> dict[str, Any] | None:
    """Parse a stored pointer; None for a missing or unreadable one."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("version"), str) else None


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
