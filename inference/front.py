"""The outermost ASGI layer: request IDs, request metrics and the access log for every request.

It also answers the two hot endpoints itself, ``POST /predict`` (through
:meth:`Service.predict`) and ``GET /healthz``, instead of handing them to
FastAPI's router, whose routing, dependency solving and response classes cost
more per request than everything else the service does around a small model's
forward pass. Every other request goes through FastAPI unchanged.

A pure ASGI class rather than ``BaseHTTPMiddleware``, which would buffer
streaming bodies and add a task per request.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.metrics import KNOWN_PATHS

if TYPE_CHECKING:
    from inference.app import Service

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("inference.access")

# nginx's code for "the client closed the connection before it was answered";
# nothing is sent, the number only labels the log line and the metrics.
CLIENT_CLOSED = 499
_MAX_REQUEST_ID = 128
# Label combinations seen so far get their metric children cached; the bound keeps
# clients inventing HTTP methods from growing the cache without limit.
_MAX_CACHED_LABELS = 256
_JSON_TYPE = (b"content-type", b"application/json")
_HEALTHZ_BODY = b'{"status":"ok"}'
_INTERNAL_ERROR = b'{"detail":"internal error"}'
_UNAUTHORIZED = b'{"detail":"missing or invalid API key"}'
_BEARER_CHALLENGE = ((b"www-authenticate", b"Bearer"),)
_DOCS_PATHS = frozenset({"/docs", "/openapi.json"})
# Swagger UI's own files (inference/apidocs.py).
_DOCS_PREFIXES = ("/docs/",)


class FrontDoor:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.metrics = service.metrics
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # A random per-process prefix and a counter: unique like a UUID, without a
        # system call for randomness on every request.
        self._id_prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)
        settings = service.settings
        # Paths that METRICS_ACCESS=keys / DOCS_ACCESS=keys put behind the API keys.
        guarded: set[str] = set()
        guarded_prefixes: tuple[str, ...] = ()
        if settings.metrics_access == "keys":
            guarded.add("/metrics")
        if settings.docs_access == "keys":
            guarded |= _DOCS_PATHS
            guarded_prefixes = _DOCS_PREFIXES
        self._guarded = frozenset(guarded)
        self._guarded_prefixes = guarded_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request (or pass it on), then record its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = None
        authorization = None
        content_length = None
        content_type = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value[:_MAX_REQUEST_ID]
            elif key == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif key == b"content-length":
                content_length = value.decode("latin-1")
            elif key == b"content-type":
                content_type = value.decode("latin-1")
        if not request_id:
            request_id = f"{self._id_prefix}{next(self._counter):016x}".encode()
        status = 500
        predicted = False
        examples = 0
        try:
            if path == "/predict" and method == "POST":
                status, examples = await self._predict(
                    receive, send, request_id, authorization, content_length, content_type
                )
                predicted = True
            elif path == "/healthz" and method == "GET":
                status = 200
                await _send(send, 200, _HEALTHZ_BODY, request_id)
            elif (
                path in self._guarded or path.startswith(self._guarded_prefixes)
            ) and not self.service.api_keys.allows(authorization):
                status = 401
                await _send(send, 401, _UNAUTHORIZED, request_id, _BEARER_CHALLENGE)
            else:
                status = await self._pass_on(scope, receive, send, request_id)
        finally:
            elapsed = time.perf_counter() - started
            if predicted:
                self.service.emf.request(status, elapsed, examples)
            self._record(method, path, status, elapsed, request_id)

    async def _predict(
        self,
        receive: Receive,
        send: Send,
        request_id: bytes,
        authorization: str | None,
        content_length: str | None,
        content_type: str | None,
    ) -> tuple[int, int]:
        """Answer and return (status, examples predicted)."""
        try:
            answer = await self.service.predict(
                authorization, content_length, receive, content_type
            )
        except ClientDisconnect:
            return CLIENT_CLOSED, 0
        except Exception:
            # What FastAPI's ServerErrorMiddleware would do, as one JSON log line.
            logger.exception("unhandled error in POST /predict", extra={"event": "request_error"})
            await _send(send, 500, _INTERNAL_ERROR, request_id)
            return 500, 0
        await _send(send, answer.status, answer.body, request_id, answer.headers)
        return answer.status, answer.examples

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> int:
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
        return status

    def _record(
        self, method: str, path: str, status: int, elapsed: float, request_id: bytes
    ) -> None:
        label = path if path in KNOWN_PATHS else "other"
        key = (label, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.requests.labels(path=label, method=method, status=str(status)),
                self.metrics.latency.labels(path=label),
            )
            if len(self._children) < _MAX_CACHED_LABELS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        if access_logger.isEnabledFor(logging.INFO):
            model = self.service.state.model
            access_logger.info(
                "%s %s %d",
                method,
                path,
                status,
                extra={
                    "event": "request",
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "version": model.pointer.version if model is not None else None,
                    "request_id": request_id.decode("latin-1"),
                },
            )


async def _send(
    send: Send,
    status: int,
    body: bytes,
    request_id: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [
        _JSON_TYPE,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
