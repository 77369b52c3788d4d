"""Asks a running inference service what it serves (its /version endpoint)."""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from functools import cache

import httpx
from django.conf import settings

from dashboard.deployments.validators import service_url_problem
from dashboard.registry.names import InvalidName, validate_version_name

# /version answers a few hundred bytes; a service (or whatever the URL really
# points at) that sends more is not one, and is not read further.
MAX_VERSION_BYTES = 64 * 1024
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle, SSL_CERT_FILE/DIR honoured),
    built once per process: building it loads the CA bundle, some 20 ms of
    CPU, which a fresh client per call paid on every live check (20 per view
    of a models page with 20 environments, one per verify poll)."""
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class LiveVersion:
    version: str | None
    sha256: str | None
    error: str = ""


def live_version(*, base_url: str, timeout: float | None = None) -> LiveVersion:
    """Return what the service at ``base_url`` reports on /version.

    Never raises: an unreachable or unready service, a URL that is not an
    acceptable service URL (validators.service_url_problem, checked again
    here: a name may resolve elsewhere since it was saved), an answer over
    MAX_VERSION_BYTES or not JSON comes back with ``error``. Redirects are
    not followed.
    """
    if not base_url:
        return LiveVersion(None, None, "the environment has no service URL")
    problem = service_url_problem(base_url)
    if problem:
        return LiveVersion(None, None, f"the service URL is refused: {problem}")
    url = base_url.rstrip("/") + "/version"
    try:
        with httpx.stream(
            "GET",
            url,
            timeout=timeout if timeout is not None else settings.SERVICE_HTTP_TIMEOUT,
            follow_redirects=False,
            verify=tls_context(),
        ) as response:
            if response.status_code != 200:
                return LiveVersion(
                    None, None, f"{base_url}/version answered {response.status_code}"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_VERSION_BYTES:
                    return LiveVersion(
                        None,
                        None,
                        f"{base_url}/version answered more than {MAX_VERSION_BYTES} bytes",
                    )
    except httpx.HTTPError as exc:
        return LiveVersion(None, None, f"{base_url} did not answer: {exc.__class__.__name__}")
    try:
        data = json.loads(bytes(body))
    except ValueError:
        return LiveVersion(None, None, f"{base_url}/version did not answer JSON")
    if not isinstance(data, dict):
        return LiveVersion(None, None, f"{base_url}/version did not answer an object")
    version, sha = data.get("version"), data.get("sha256")
    if version is not None:
        try:
            validate_version_name(version)
        except InvalidName:
            # Shown on pages and recorded on deployments: never junk.
            return LiveVersion(None, None, f"{base_url}/version reported an invalid version name")
    return LiveVersion(version, sha if isinstance(sha, str) and _SHA256_RE.fullmatch(sha) else None)
