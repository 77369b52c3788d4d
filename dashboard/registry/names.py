"""The names that become S3 keys: checked before they get anywhere near one."""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
VERSION_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
ENVIRONMENT_NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,31}"

_MODEL_RE = re.compile(MODEL_NAME_PATTERN, re.ASCII)
_VERSION_RE = re.compile(VERSION_NAME_PATTERN, re.ASCII)
_ENVIRONMENT_RE = re.compile(ENVIRONMENT_NAME_PATTERN, re.ASCII)


class InvalidName(ValueError):
    """A model, version or environment name that the contract does not allow."""


def _check(kind: str, value: object, regex: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidName(f"{kind} name must be a string")
    # fullmatch, not match + "$": "$" would accept a trailing newline.
    if regex.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidName(f"invalid {kind} name {shown!r}: {rule}")
    if kind == "version" and value in {".", ".."}:
        raise InvalidName(f"invalid version name {value!r}")
    return value


def validate_model_name(value: object) -> str:
    """Return ``value`` when it is a valid model name, else raise InvalidName."""
    return _check(
        "model",
        value,
        _MODEL_RE,
        "use 1-63 characters: lowercase letters, digits and '-', starting with a letter or digit",
    )


def validate_version_name(value: object) -> str:
    """Return ``value`` when it is a valid version name, else raise InvalidName."""
    return _check(
        "version",
        value,
        _VERSION_RE,
        "use 1-64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
    )


def validate_environment_name(value: object) -> str:
    """Return ``value`` when it is a valid environment name, else raise InvalidName."""
    return _check(
        "environment",
        value,
        _ENVIRONMENT_RE,
        "use 1-32 characters: lowercase letters, digits and '-', starting with a letter or digit",
    )


def model_prefix(model: str) -> str:
    return f"models/{validate_model_name(model)}/"


def version_prefix(model: str, version: str) -> str:
    return f"{model_prefix(model)}{validate_version_name(version)}/"
