"""manifest.json: what the dashboard records next to each uploaded artifact.

See CONTRACT.md section 1 for the format. Parsing is strict: a manifest that
does not follow the contract is reported, never half-trusted.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from dashboard.registry.names import InvalidName, validate_model_name, validate_version_name

MANIFEST_FILE = "manifest.json"
FORMATS = ("torchscript", "torch.export")
DTYPES = ("float32", "float64", "int64", "int32", "bool")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ARTIFACT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
MAX_INPUT_RANK = 8


class ManifestError(ValueError):
    """A manifest (or the metadata for one) that breaks the contract."""


def format_for_filename(filename: str) -> str:
    """Guess the artifact format from its file name (``.pt2`` is torch.export)."""
    return "torch.export" if filename.endswith(".pt2") else "torchscript"


def validate_sha256(value: object) -> str:
    if not isinstance(value, str) or _SHA256_RE.fullmatch(value) is None:
        raise ManifestError("sha256 must be 64 lowercase hexadecimal characters")
    return value


def validate_artifact_name(value: object, *, field: str = "artifact") -> str:
    """A plain file name; ``field`` names it in the error (``filename`` in an upload)."""
    if not isinstance(value, str):
        raise ManifestError(f"{field} must be a string")
    if "/" in value or "\\" in value or value in {".", ".."}:
        raise ManifestError(
            f"{field} must be a plain file name without a path (no '/', '\\' or '..'), "
            f"e.g. model.pt; got {value[:100]!r}"
        )
    if value == MANIFEST_FILE:
        raise ManifestError(f"{field} must not be {MANIFEST_FILE} (the dashboard writes that one)")
    if _ARTIFACT_RE.fullmatch(value) is None:
        raise ManifestError(
            f"{field} must be a plain file name of letters, digits, '.', '_' and '-' "
            f"(starting with a letter or digit, at most 128 characters); got {value[:100]!r}"
        )
    return value


def validate_input_signature(shape: object, dtype: object) -> tuple[list[int], str]:
    """Return (shape, dtype) of one example when they follow the contract."""
    if not isinstance(shape, list) or not shape or len(shape) > MAX_INPUT_RANK:
        raise ManifestError(
            f"input.shape must be a list of 1 to {MAX_INPUT_RANK} positive integers"
        )
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 1_000_000:
            raise ManifestError("input.shape must hold positive integers (at most 1000000)")
    if dtype not in DTYPES:
        raise ManifestError(f"input.dtype must be one of {', '.join(DTYPES)}")
    return list(shape), str(dtype)


@dataclass(frozen=True)
class Manifest:
    model: str
    version: str
    artifact: str
    format: str
    sha256: str
    size: int
    input_shape: list[int]
    input_dtype: str
    created_at: dt.datetime
    created_by: str = ""
    notes: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "model": self.model,
            "version": self.version,
            "artifact": self.artifact,
            "format": self.format,
            "sha256": self.sha256,
            "size": self.size,
            "input": {"shape": self.input_shape, "dtype": self.input_dtype},
            "created_at": self.created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "created_by": self.created_by,
            "notes": self.notes,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse a manifest document; raise ManifestError naming what is wrong."""
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        if data.get("schema") != 1:
            raise ManifestError("manifest schema must be 1")
        try:
            model = validate_model_name(data.get("model"))
            version = validate_version_name(data.get("version"))
        except InvalidName as exc:
            raise ManifestError(str(exc)) from exc
        if data.get("format") not in FORMATS:
            raise ManifestError(f"format must be one of {', '.join(FORMATS)}")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError("size must be a non-negative integer")
        raw_input = data.get("input")
        if not isinstance(raw_input, dict):
            raise ManifestError("input must be an object with shape and dtype")
        shape, dtype = validate_input_signature(raw_input.get("shape"), raw_input.get("dtype"))
        try:
            created_at = dt.datetime.fromisoformat(str(data.get("created_at", "")))
        except ValueError as exc:
            raise ManifestError("created_at must be an ISO 8601 timestamp") from exc
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=dt.UTC)
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in metrics.items()
        ):
            raise ManifestError("metrics must map names to numbers")
        return cls(
            model=model,
            version=version,
            artifact=validate_artifact_name(data.get("artifact")),
            format=str(data["format"]),
            sha256=validate_sha256(data.get("sha256")),
            size=size,
            input_shape=shape,
            input_dtype=dtype,
            created_at=created_at,
            created_by=str(data.get("created_by") or ""),
            notes=str(data.get("notes") or ""),
            metrics={k: float(v) for k, v in metrics.items()},
        )
