"""Asks a running inference service what it serves (its /version endpoint)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings


@dataclass(frozen=True)
class LiveVersion:
    version: str | None
    sha256: str | None
    error: str = ""


def live_version(*, base_url: str, timeout: float | None = None) -> LiveVersion:
    """Return what the service at ``base_url`` reports on /version.

    Never raises: an unreachable or unready service comes back with ``error``.
    """
    if not base_url:
        return LiveVersion(None, None, "the environment has no service URL")
    try:
        response = httpx.get(
            base_url.rstrip("/") + "/version",
            timeout=timeout if timeout is not None else settings.SERVICE_HTTP_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        return LiveVersion(None, None, f"{base_url} did not answer: {exc.__class__.__name__}")
    if response.status_code != 200:
        return LiveVersion(None, None, f"{base_url}/version answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        return LiveVersion(None, None, f"{base_url}/version did not answer JSON")
    if not isinstance(body, dict):
        return LiveVersion(None, None, f"{base_url}/version did not answer an object")
    version, sha = body.get("version"), body.get("sha256")
    return LiveVersion(
        version if isinstance(version, str) else None, sha if isinstance(sha, str) else None
    )
