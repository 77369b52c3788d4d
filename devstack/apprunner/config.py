"""Configuration of the local App Runner stand-in (a JSON file).

Example::

    {"region": "us-east-1", "account_id": "000000000000",
     "state_dir": ".devstack/apprunner",
     "services": [{"name": "iris-staging", "port": 8081,
                   "command": ["/path/to/python", "-m", "inference"],
                   "env": {"MODEL_SSM_PARAMETER": "/models/iris/staging"},
                   "health_check_path": "/readyz",
                   "health_check_timeout_seconds": 180,
                   "health_check_interval_seconds": 0.5}]}

A relative ``state_dir`` is taken relative to the current directory. A service
``port`` of 0 means "any free port" (tests use it); the bound port is what the
service reports as its URL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# App Runner's own constraints (botocore model: ServiceName, account ids in ARNs).
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-_]{3,39}")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or names something invalid."""


@dataclass(frozen=True)
class ServiceConfig:
    """One App Runner service: a command run as instances behind a stable port."""

    name: str
    port: int
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    health_check_path: str = "/"
    health_check_timeout_seconds: float = 180.0
    health_check_interval_seconds: float = 1.0
    # How long a replaced instance may take to finish in-flight requests.
    drain_timeout_seconds: float = 30.0
    # Between SIGTERM and SIGKILL of an instance's process group.
    stop_grace_seconds: float = 10.0
    image_identifier: str = "public.ecr.aws/devstack/local-process:latest"


@dataclass(frozen=True)
class StandInConfig:
    """The whole stand-in: the account it pretends to be and its services."""

    region: str
    account_id: str
    state_dir: Path
    services: tuple[ServiceConfig, ...]


def load_config(path: str | Path) -> StandInConfig:
    """Read and validate the JSON file at ``path``.

    Raises ConfigError naming the offending field.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: Any) -> StandInConfig:
    """Validate an already-decoded configuration document.

    Raises ConfigError naming the offending field.
    """
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a JSON object")
    _reject_unknown(raw, {"region", "account_id", "state_dir", "services"}, "configuration")
    region = _string(raw, "region", "configuration", default="us-east-1")
    if not _REGION.fullmatch(region):
        raise ConfigError(f"region {region!r} does not look like an AWS region (us-east-1)")
    account_id = _string(raw, "account_id", "configuration", default="000000000000")
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise ConfigError(f"account_id {account_id!r} must be 12 digits")
    state_dir = Path(_string(raw, "state_dir", "configuration", default=".devstack/apprunner"))
    raw_services = raw.get("services")
    if not isinstance(raw_services, list) or not raw_services:
        raise ConfigError("services must be a non-empty list")
    services = tuple(_service(item, index) for index, item in enumerate(raw_services))
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise ConfigError(f"service names must be unique, got {names}")
    ports = [s.port for s in services if s.port]
    if len(set(ports)) != len(ports):
        raise ConfigError(f"service ports must be unique, got {ports}")
    return StandInConfig(
        region=region, account_id=account_id, state_dir=state_dir, services=services
    )


_SERVICE_KEYS = {
    "name",
    "port",
    "command",
    "env",
    "cwd",
    "health_check_path",
    "health_check_timeout_seconds",
    "health_check_interval_seconds",
    "drain_timeout_seconds",
    "stop_grace_seconds",
    "image_identifier",
}


def _service(raw: Any, index: int) -> ServiceConfig:
    where = f"services[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    _reject_unknown(raw, _SERVICE_KEYS, where)
    name = _string(raw, "name", where)
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}.name {name!r} is not a valid App Runner service name "
            "(4-40 characters: letters, digits, '-' and '_', starting with a letter or digit)"
        )
    where = f"service {name!r}"
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port must be an integer 0-65535 (0 = any free port)")
    command = raw.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) and part for part in command)
    ):
        raise ConfigError(f"{where}: command must be a non-empty list of non-empty strings")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in env.items()
    ):
        raise ConfigError(f"{where}: env must map variable names to string values")
    if "PORT" in env:
        raise ConfigError(f"{where}: env must not set PORT; each instance gets its own")
    cwd = raw.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError(f"{where}: cwd must be a string")
    path = _string(raw, "health_check_path", where, default="/")
    if not path.startswith("/"):
        raise ConfigError(f"{where}: health_check_path must start with '/'")
    defaults = ServiceConfig(name=name, port=0, command=("x",))
    return ServiceConfig(
        name=name,
        port=port,
        command=tuple(command),
        env=dict(env),
        cwd=Path(cwd) if cwd else None,
        health_check_path=path,
        health_check_timeout_seconds=_seconds(
            raw, "health_check_timeout_seconds", where, defaults.health_check_timeout_seconds
        ),
        health_check_interval_seconds=_seconds(
            raw, "health_check_interval_seconds", where, defaults.health_check_interval_seconds
        ),
        drain_timeout_seconds=_seconds(
            raw, "drain_timeout_seconds", where, defaults.drain_timeout_seconds
        ),
        stop_grace_seconds=_seconds(raw, "stop_grace_seconds", where, defaults.stop_grace_seconds),
        image_identifier=_string(raw, "image_identifier", where, default=defaults.image_identifier),
    )


def _reject_unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")


def _string(raw: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _seconds(raw: dict[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: {key} must be a positive number of seconds")
    return float(value)
