"""The promoted-version pointer (contract section 2) and the declared model input."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference.errors import StartupFailure

InputDtype = Literal["float32", "float64", "int64", "int32", "bool"]
SUPPORTED_FORMATS = ("torchscript", "torch.export")

# Guard rails, not limits anyone should reach: they keep a typo in a pointer from
# allocating a warm-up tensor the size of the machine.
_MAX_RANK = 8
_MAX_EXAMPLE_ELEMENTS = 1 << 28


class InputSpec(BaseModel):
    """Shape of ONE example (the batch dimension is implied) and its element dtype."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    shape: tuple[Annotated[int, Field(ge=1)], ...] = Field(max_length=_MAX_RANK)
    dtype: InputDtype

    @field_validator("shape")
    @classmethod
    def _bounded(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        elements = 1
        for dim in shape:
            elements *= dim
        if elements > _MAX_EXAMPLE_ELEMENTS:
            raise ValueError(f"one example would hold {elements} elements; that is not plausible")
        return shape


class Pointer(BaseModel):
    """What an environment serves: an exact S3 object version and its SHA-256.

    Fields beyond the ones the service needs (``promoted_by``, ``reason``, ...) are
    kept, not refused, so the dashboard can add to the document without a redeploy.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="allow", populate_by_name=True)

    schema_version: Literal[1] = Field(alias="schema")
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    s3_version_id: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int = Field(ge=1)
    format: str
    input: InputSpec

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


def parse_pointer(text: str | bytes, *, source: str) -> Pointer:
    """Return the pointer in ``text``; raise StartupFailure naming ``source`` and the field.

    An artifact format the service cannot load is reported as ``unsupported_format``
    rather than as a malformed pointer, since the document itself is fine.
    """
    try:
        pointer = Pointer.model_validate_json(text)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False)[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "document"
            problems.append(f"{where}: {error['msg']}")
        raise StartupFailure(
            "pointer_invalid", f"malformed model pointer from {source}: " + "; ".join(problems)
        ) from None
    if pointer.format not in SUPPORTED_FORMATS:
        raise StartupFailure(
            "unsupported_format",
            f"unsupported artifact format {pointer.format!r} in the pointer from {source} "
            f"(supported: {', '.join(SUPPORTED_FORMATS)})",
        )
    return pointer
