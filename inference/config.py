"""Settings of the inference service, read only from the environment.

Every variable is parsed strictly: a value that does not parse (``PORT=abc``,
``BATCHING=maybe``) or is out of range stops startup with a message naming the
variable, instead of silently falling back to a default.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.emf import parse_dimensions

MiB = 1024 * 1024
GiB = 1024 * MiB


class ConfigError(Exception):
    """The service's configuration is unusable; the message names the variable."""


_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def _verify_mode(value: object) -> object:
    # The variable used to be a boolean; an explicit "true" asked for verification
    # every time, which is now "full".
    if isinstance(value, bool):
        return "full" if value else "off"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return "full"
        if text in _FALSE:
            return "off"
        return text
    return value


Access = Literal["open", "keys", "off"]
Details = Literal["full", "keys", "off"]


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _default_cpu_count() -> int:
    # The affinity mask reflects `docker run --cpuset-cpus` and taskset; os.cpu_count()
    # reports the host's CPUs, which over-subscribes a pinned container.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Configuration of one inference process. Field names are the environment variables."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,  # App Runner and compose files often inject "" for "unset".
        extra="ignore",
        frozen=True,
    )

    # Where the pointer comes from; precedence MODEL_POINTER > MODEL_SSM_PARAMETER >
    # MODEL_POINTER_FILE (the last is the image default of a baked model).
    model_pointer: str | None = None
    model_ssm_parameter: str | None = None
    model_pointer_file: Path | None = None

    model_cache_dir: Path = Path(tempfile.gettempdir()) / "modeldeck-model-cache"
    model_cache_max_bytes: Annotated[int, Field(ge=1)] = 10 * GiB
    model_cache_verify: Annotated[
        Literal["full", "stamp", "off"], BeforeValidator(_verify_mode)
    ] = "stamp"

    download_part_size: Annotated[int, Field(ge=64 * 1024, le=1 * GiB)] = 8 * MiB
    download_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    startup_retries: Annotated[int, Field(ge=0, le=100)] = 5
    startup_retry_base_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    startup_retry_max_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0

    aws_region: str | None = None
    aws_endpoint_url: str | None = None

    inference_api_keys: str | None = None
    inference_api_keys_file: Path | None = None
    # Hardening (docs/inference.md, "Running exposed"): all default to the open
    # behaviour of a development instance.
    require_api_keys: bool = False
    metrics_access: Annotated[Access, BeforeValidator(_lower)] = "open"
    docs_access: Annotated[Access, BeforeValidator(_lower)] = "open"
    error_details: Annotated[Details, BeforeValidator(_lower)] = "full"
    max_requests_in_flight: Annotated[int, Field(ge=1)] = 1024
    max_bytes_in_flight: Annotated[int, Field(ge=1024)] = 256 * MiB

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080

    max_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * MiB

    batching: bool = True
    batch_max_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    batch_max_wait_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    max_queued_requests: Annotated[int, Field(ge=1)] = 512
    torch_num_threads: Annotated[int, Field(ge=1, le=1024)] = Field(
        default_factory=_default_cpu_count
    )
    # How long a thread waiting for the interpreter lock waits before it asks the
    # running thread to hand it over (sys.setswitchinterval); Python's own is 5 ms.
    # See docs/inference.md, "Performance".
    switch_interval_ms: Annotated[float, Field(ge=0.05, le=100)] = 0.5

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # The service's own metrics as CloudWatch EMF lines on stdout (inference.emf).
    emf_enabled: bool = True
    emf_namespace: str = Field(default="ModelDeck/Inference", min_length=1, max_length=255)
    emf_dimensions: str | None = None
    emf_flush_seconds: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    shutdown_timeout_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0

    _api_keys: tuple[str, ...] = PrivateAttr(default=())
    _emf_dimensions: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not (self.model_pointer or self.model_ssm_parameter or self.model_pointer_file):
            raise ValueError(
                "no model configured: set MODEL_POINTER, MODEL_SSM_PARAMETER or MODEL_POINTER_FILE"
            )
        self._api_keys = _read_api_keys(self.inference_api_keys, self.inference_api_keys_file)
        self._emf_dimensions = parse_dimensions(self.emf_dimensions)
        if self.emf_namespace.startswith("AWS/") or not self.emf_namespace.isprintable():
            raise ValueError(f"EMF_NAMESPACE {self.emf_namespace!r}: AWS/ is reserved for AWS")
        if not self._api_keys:
            # Failing closed: each of these asks for keys; without any, "keys" would
            # silently mean "open".
            needs = [
                name
                for name, wanted in (
                    ("REQUIRE_API_KEYS=true", self.require_api_keys),
                    ("METRICS_ACCESS=keys", self.metrics_access == "keys"),
                    ("DOCS_ACCESS=keys", self.docs_access == "keys"),
                    ("ERROR_DETAILS=keys", self.error_details == "keys"),
                )
                if wanted
            ]
            if needs:
                raise ValueError(
                    f"{', '.join(needs)} but no API key is configured: "
                    "set INFERENCE_API_KEYS or INFERENCE_API_KEYS_FILE"
                )
        if self.max_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                f"MAX_BYTES_IN_FLIGHT ({self.max_bytes_in_flight}) is below MAX_BODY_BYTES "
                f"({self.max_body_bytes}): a request of the allowed size could never be admitted"
            )
        return self

    @property
    def emf_dimension_values(self) -> dict[str, str]:
        """EMF_DIMENSIONS parsed: the dimensions added to Model and Version."""
        return dict(self._emf_dimensions)

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The accepted API keys; empty means ``/predict`` is open."""
        return self._api_keys


def _read_api_keys(inline: str | None, file: Path | None) -> tuple[str, ...]:
    keys = [k.strip() for k in (inline or "").split(",")]
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"INFERENCE_API_KEYS_FILE {file} is unreadable: {exc}") from exc
        from_file = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
        if not from_file:
            # Failing closed: an empty secrets file must not silently open /predict.
            raise ValueError(f"INFERENCE_API_KEYS_FILE {file} contains no keys")
        keys.extend(from_file)
    unique = dict.fromkeys(k for k in keys if k)
    return tuple(unique)


def load_settings() -> Settings:
    """Return the settings from the environment; raise ConfigError naming every bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc
