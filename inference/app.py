"""The FastAPI application: endpoints, request logging and the service's lifecycle.

``create_app(settings)`` builds an app whose lifespan starts the background
startup (pointer, download, verification, load, warm-up) without waiting for
it, so ``/healthz`` answers as soon as the port is open, and on shutdown lets
queued predictions finish before the process exits.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
import orjson
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.auth import ApiKeys
from inference.batching import Batcher, ForwardFailed, Overloaded, ShuttingDown
from inference.config import Settings
from inference.metrics import KNOWN_PATHS, Metrics
from inference.startup import Startup
from inference.state import LoadedModel, ModelState, Phase, Status
from inference.validation import InputError, body_may_contain_booleans, parse_json, to_batch

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("inference.access")

# Below this size parsing and validating on the event loop is cheaper than a thread
# hop; above it, the work moves off the loop so probes are not held up by it.
_INLINE_BODY_BYTES = 64 * 1024


class Service:
    """Everything one app instance owns: settings, state, metrics, the batcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = ModelState()
        self.metrics = Metrics()
        self.api_keys = ApiKeys(settings.api_keys)
        self.batcher: Batcher | None = None
        self.startup = Startup(settings, self.state, self.metrics, on_ready=self._on_ready)
        self._loader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._previous_torch_threads: int | None = None

    def start(self) -> None:
        """Start loading the model in the background and return at once."""
        if torch.get_num_threads() != self.settings.torch_num_threads:
            self._previous_torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.settings.torch_num_threads)
        self._loader = threading.Thread(
            target=self.startup.run, name="inference-startup", daemon=True
        )
        self._loader.start()

    def ready(self) -> tuple[LoadedModel, Batcher] | None:
        """Return the model and its batcher when ready, else None."""
        model, batcher = self.state.model, self.batcher
        if model is None or batcher is None:
            return None
        return model, batcher

    def shutdown(self) -> None:
        """Stop startup if still running and finish the queued predictions."""
        self.startup.stop.set()
        with self._lock:
            self._stopping = True
            batcher = self.batcher
        if batcher is not None and not batcher.stop(self.settings.shutdown_timeout_seconds):
            logger.warning("predictions still running at shutdown", extra={"event": "shutdown"})
        if self._loader is not None:
            # Long enough for an interrupted download to delete its temporary file.
            self._loader.join(timeout=5)
        if self._previous_torch_threads is not None:
            # The thread count is process-wide; leave it as found for whoever else
            # runs torch in this process (tests run several apps in one).
            torch.set_num_threads(self._previous_torch_threads)

    def _on_ready(self, model: LoadedModel) -> None:
        s = self.settings
        batcher = Batcher(
            model,
            self.metrics,
            enabled=s.batching,
            max_examples=s.batch_max_size,
            max_wait_seconds=s.batch_max_wait_ms / 1000,
            max_queued=s.max_queued_requests,
        )
        with self._lock:
            if self._stopping:
                return
            batcher.start()
            self.batcher = batcher
        p = model.pointer
        self.metrics.model_info.info(
            {"model": p.model, "version": p.version, "sha256": p.sha256, "format": p.format}
        )
        self.metrics.ready.set(1)
        self.state.ready(model)


def get_service(request: Request) -> Service:
    """Return the app's Service (a FastAPI dependency)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


class PredictRequest(BaseModel):
    """A batch of examples, each a nested list of the model's declared input shape."""

    inputs: list[Any] = Field(
        description="Examples; each has the declared input shape (the batch is this list).",
        examples=[[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]],
    )


class PredictResponse(BaseModel):
    """The model's outputs for the request's examples, in order."""

    model: str
    version: str
    outputs: Any = Field(
        description="One tensor: its rows. Tuple/list outputs: a list of such; dict: an object."
    )


class VersionResponse(BaseModel):
    """What this instance has loaded."""

    model: str
    version: str
    sha256: str
    format: str
    loaded_at: str


class NotReady(BaseModel):
    """Why the instance cannot answer yet (or ever, when the phase is ``failed``)."""

    status: str = Field(description="resolving, downloading, verifying, loading or failed")
    detail: str


class ErrorDetail(BaseModel):
    """A refused request and the reason."""

    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing or wrong API key"},
    413: {"model": ErrorDetail, "description": "Body larger than MAX_BODY_BYTES"},
    422: {"model": ErrorDetail, "description": "Input does not match the declared shape/dtype"},
    500: {"model": ErrorDetail, "description": "The model raised on this input"},
    503: {"model": NotReady, "description": "Not ready (startup phase or failure), or overloaded"},
}


def create_app(settings: Settings) -> FastAPI:
    """Return the inference app for ``settings``; its lifespan starts and stops the service."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.shutdown)

    app = FastAPI(
        title="ModelDeck inference",
        summary="Serves the promoted version of one PyTorch model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(RequestLogMiddleware, metrics=service.metrics)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Answer 200 while the process is up, whatever the model's state."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"model": NotReady}})
    async def readyz() -> Response:
        """Answer 200 once the model is loaded, verified and warmed up; else 503 with why."""
        ready = service.ready()
        if ready is None:
            return _not_ready(service.state.status)
        model, _ = ready
        return JSONResponse(
            {"status": "ready", "model": model.pointer.model, "version": model.pointer.version}
        )

    @app.get(
        "/version",
        tags=["model"],
        response_model=VersionResponse,
        responses={503: {"model": NotReady}},
    )
    async def version() -> Response:
        """Describe the loaded model: name, version, SHA-256, format, load time."""
        ready = service.ready()
        if ready is None:
            return _not_ready(service.state.status)
        return JSONResponse(ready[0].version_info())

    @app.post(
        "/predict",
        tags=["model"],
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request) -> Response:
        """Run the model on ``inputs``; concurrent requests share forward passes."""
        if not service.api_keys.allows(request.headers.get("authorization")):
            return _error(401, "missing or invalid API key", {"WWW-Authenticate": "Bearer"})
        ready = service.ready()
        if ready is None:
            return _not_ready(service.state.status)
        model, batcher = ready
        limit = service.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _error(413, f"request body exceeds {limit} bytes")
        body = await _read_limited(request, limit)
        if body is None:
            return _error(413, f"request body exceeds {limit} bytes")
        try:
            if len(body) <= _INLINE_BODY_BYTES:
                batch = _validate(body, model, service.settings.max_batch_size)
            else:
                batch = await anyio.to_thread.run_sync(
                    _validate, body, model, service.settings.max_batch_size
                )
        except InputError as exc:
            return _error(422, str(exc))
        try:
            outputs = await batcher.submit(batch)
        except Overloaded:
            return _unavailable("overloaded", "too many requests are waiting for the model")
        except ShuttingDown:
            return _unavailable("shutting_down", "the instance is shutting down")
        except ForwardFailed as exc:
            return _error(500, f"model forward failed: {exc}")
        return Response(content=model_prefix(model) + outputs + b"}", media_type="application/json")

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition of the instance's metrics."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def model_prefix(model: LoadedModel) -> bytes:
    """Return the start of a /predict answer, up to and including ``"outputs":``."""
    head = orjson.dumps({"model": model.pointer.model, "version": model.pointer.version})
    return head[:-1] + b',"outputs":'


def _validate(body: bytes, model: LoadedModel, max_examples: int) -> np.ndarray:
    return to_batch(
        parse_json(body),
        model.pointer.input,
        max_examples=max_examples,
        may_contain_booleans=body_may_contain_booleans(body),
    )


async def _read_limited(request: Request, limit: int) -> bytes | None:
    # Content-Length can be absent (chunked) or wrong, so the bytes are counted too.
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _not_ready(status: Status) -> Response:
    headers = {} if status.phase is Phase.FAILED else {"Retry-After": "5"}
    return JSONResponse(
        {"status": status.phase.value, "detail": status.detail},
        status_code=503,
        headers=headers,
    )


def _unavailable(status: str, detail: str) -> Response:
    return JSONResponse(
        {"status": status, "detail": detail}, status_code=503, headers={"Retry-After": "1"}
    )


class RequestLogMiddleware:
    """One structured log line and the request metrics for every HTTP request.

    Bodies are never logged. A pure ASGI middleware rather than BaseHTTPMiddleware,
    which would buffer streaming bodies and add a task per request.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, recording its status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            path = scope.get("path", "")
            label = path if path in KNOWN_PATHS else "other"
            method = scope.get("method", "")
            self.metrics.requests.labels(path=label, method=method, status=str(status)).inc()
            self.metrics.latency.labels(path=label).observe(elapsed)
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
                    "request_id": request_id,
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")[:128]
            return text
    return None
