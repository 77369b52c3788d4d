"""Request/response middleware: the client address behind trusted proxies, and
JSON errors under /api/ (Django's own 404/405 pages are HTML)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse

from dashboard.security import Network, address_in


class ApiJsonErrorsMiddleware:
    """Turn a non-JSON error under /api/ (unknown path, wrong method) into
    ``{"detail": ...}`` with the same status and headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            phrase = HTTPStatus(response.status_code).phrase
            detail = {404: f"no API endpoint at {request.path}"}.get(response.status_code, phrase)
            if response.status_code == 405 and response.has_header("Allow"):
                detail = f"method {request.method} not allowed; use {response['Allow']}"
            replacement = JsonResponse({"detail": detail}, status=response.status_code)
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response


# Headers only a trusted proxy may set: from anyone else they are lies that
# would fake the client's address (and so dodge the sign-in lockout) or claim
# HTTPS (and so weaken the CSRF and redirect checks).
_FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


class TrustedProxyMiddleware:
    """Find the real client behind the reverse proxies named by TRUSTED_PROXIES.

    When the peer (``REMOTE_ADDR``) is a trusted proxy, the client is the
    right-most ``X-Forwarded-For`` hop that is not itself a trusted proxy:
    every hop to its right was appended by a proxy we trust, every hop to its
    left was written by the client and may be forged. ``REMOTE_ADDR`` becomes
    that address (the proxy's is kept in ``MODELDECK_PROXY_ADDR``). When the
    peer is anyone else, the X-Forwarded-* headers are dropped. Runs first, so
    Django's SECURE_PROXY_SSL_HEADER and the sign-in lockout see the result.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.proxies = settings.TRUSTED_PROXY_NETWORKS

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        peer = str(meta.get("REMOTE_ADDR", ""))
        if self.proxies and address_in(peer, self.proxies):
            client = forwarded_client(str(meta.get("HTTP_X_FORWARDED_FOR", "")), self.proxies)
            if client:
                meta["MODELDECK_PROXY_ADDR"] = peer
                meta["REMOTE_ADDR"] = client
        else:
            for header in _FORWARDED_HEADERS:
                meta.pop(header, None)
        return self.get_response(request)


def forwarded_client(header: str, proxies: Iterable[Network]) -> str | None:
    """The right-most hop of an X-Forwarded-For value that is not a trusted
    proxy; None when the header is empty or a hop is not an IP address."""
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None  # a proxy we trust writes addresses; junk means a forgery
        if not address_in(hop, proxies):
            return hop
    return hops[0] if hops else None


def client_ip(request: HttpRequest) -> str:
    """The client's address as TrustedProxyMiddleware resolved it (the
    sign-in lockout counts failures per this address)."""
    return str(request.META.get("REMOTE_ADDR", ""))


class AwsErrorPageMiddleware:
    """A page whose AWS call failed and that did not handle it gets the
    "AWS is not answering" page (503 for a transient failure, else 502) with
    the operation and an error id, instead of a 500. The API has its own
    handler (dashboard/api.py)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.shortcuts import render

        from dashboard.aws.errors import AwsError

        if not isinstance(exception, AwsError) or request.path.startswith("/api/"):
            return None
        return render(
            request,
            "problem.html",
            {
                "title": "AWS is not answering",
                "message": f"The dashboard could not complete this: {exception}",
                "error": exception,
            },
            status=503 if exception.transient else 502,
        )


class WorkerScriptCspMiddleware:
    """A dedicated Web Worker runs under the Content-Security-Policy of its own
    script's response, not the page's. The upload's hash worker
    (js/upload-hash.js) compiles hash-wasm's WebAssembly for files hashed
    chunk by chunk, so that one static file's policy also allows
    'wasm-unsafe-eval' (WebAssembly only; JavaScript eval stays refused).

    Sits between django-csp's middleware and WhiteNoise, which answers static
    files itself; the name may carry ManifestStaticFilesStorage's hash.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        from django.conf import settings

        self.prefix = f"{settings.STATIC_URL}js/upload-hash."

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(self.prefix) and request.path.endswith(".js"):
            response._csp_update = {"script-src": ["'wasm-unsafe-eval'"]}  # type: ignore[attr-defined]
        return response
