"""The FastAPI application: endpoints and the service's lifecycle.

``create_app(settings)`` builds an app whose lifespan starts the background
startup (pointer, download, verification, load, warm-up) without waiting for
it, so ``/healthz`` answers as soon as the port is open, and on shutdown lets
queued predictions finish before the process exits.

``POST /predict`` and ``GET /healthz`` are answered by :class:`~inference.front.FrontDoor`
(the outermost ASGI layer) without going through FastAPI's routing; FastAPI
still declares them, which is where the OpenAPI document comes from, and its
``/predict`` route runs the same :meth:`Service.predict`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
import orjson
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from inference.admission import Admission, Ticket
from inference.apidocs import add_api_docs
from inference.auth import ApiKeys
from inference.batching import Batcher, ForwardFailed, Overloaded, ShuttingDown
from inference.config import Settings
from inference.emf import EmfMetrics
from inference.front import FrontDoor
from inference.metrics import Metrics
from inference.startup import Startup
from inference.state import LoadedModel, ModelState, Phase, Status
from inference.validation import (
    NPY_CONTENT_TYPE,
    InputError,
    body_may_contain_booleans,
    from_npy,
    is_npy,
    parse_json,
    to_batch,
)

logger = logging.getLogger(__name__)

# Below this size parsing and validating on the event loop is cheaper than a thread
# hop; above it, the work moves off the loop so probes are not held up by it.
_INLINE_BODY_BYTES = 64 * 1024
OPENAPI_URL = "/openapi.json"


class Service:
    """Everything one app instance owns: settings, state, metrics, the batcher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = ModelState()
        self.metrics = Metrics()
        self.api_keys = ApiKeys(settings.api_keys)
        self.admission = Admission(settings.max_requests_in_flight, settings.max_bytes_in_flight)
        self.emf = EmfMetrics(
            namespace=settings.emf_namespace,
            dimensions=settings.emf_dimension_values,
            flush_seconds=settings.emf_flush_seconds,
            enabled=settings.emf_enabled,
        )
        self._started = time.perf_counter()
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
        self._started = time.perf_counter()
        self.emf.start()
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
        self.emf.stop()
        if self._previous_torch_threads is not None:
            # The thread count is process-wide; leave it as found for whoever else
            # runs torch in this process (tests run several apps in one).
            torch.set_num_threads(self._previous_torch_threads)

    async def predict(
        self,
        authorization: str | None,
        content_length: str | None,
        receive: Receive,
        content_type: str | None = None,
    ) -> Answer:
        """Answer one ``POST /predict`` whose body is read from ``receive``.

        Checks in the documented order: key, readiness, body size, requests and
        bytes in flight, JSON and validation, queue, forward. Raises
        ClientDisconnect when the client goes away before its body has arrived.
        """
        if not self.api_keys.allows(authorization):
            return _error(401, "missing or invalid API key", _BEARER_CHALLENGE)
        ready = self.ready()
        if ready is None:
            return _not_ready(self.state.status, details=self.shows_details(authorization))
        limit = self.settings.max_body_bytes
        declared = int(content_length) if content_length and content_length.isdigit() else None
        if declared is not None and declared > limit:
            return _error(413, f"request body exceeds {limit} bytes")
        ticket = self.admission.enter()
        if ticket is None:
            self.metrics.refused.labels(reason="requests").inc()
            return _unavailable(
                "overloaded",
                f"{self.settings.max_requests_in_flight} requests are in flight; retry shortly",
            )
        try:
            return await self._admitted(
                ready, ticket, declared, authorization, receive, is_npy(content_type)
            )
        finally:
            self.admission.release(ticket)

    def shows_details(self, authorization: str | None) -> bool:
        """Return True when errors may carry their internal details (ERROR_DETAILS)."""
        mode = self.settings.error_details
        if mode == "full":
            return True
        return mode == "keys" and self.api_keys.enabled and self.api_keys.allows(authorization)

    async def _admitted(
        self,
        ready: tuple[LoadedModel, Batcher],
        ticket: Ticket,
        declared: int | None,
        authorization: str | None,
        receive: Receive,
        npy: bool,
    ) -> Answer:
        model, batcher = ready
        limit = self.settings.max_body_bytes
        if declared is not None and not self.admission.reserve(ticket, declared):
            return self._over_bytes()
        # Without a Content-Length (chunked), bytes are reserved as they arrive.
        budget = None if declared is not None else (self.admission, ticket)
        try:
            body = await _read_limited(receive, limit, budget)
        except _OverBudget:
            return self._over_bytes()
        if body is None:
            return _error(413, f"request body exceeds {limit} bytes")
        max_examples = self.settings.max_batch_size
        try:
            if len(body) <= _INLINE_BODY_BYTES:
                batch = _validate(body, model, max_examples, npy)
            else:
                batch = await anyio.to_thread.run_sync(_validate, body, model, max_examples, npy)
        except InputError as exc:
            return _error(422, str(exc))
        try:
            outputs = await batcher.submit(batch)
        except Overloaded:
            return _unavailable("overloaded", "too many requests are waiting for the model")
        except ShuttingDown:
            return _unavailable("shutting_down", "the instance is shutting down")
        except ForwardFailed as exc:
            if self.shows_details(authorization):
                return _error(500, f"model forward failed: {exc}")
            return _error(500, "model forward failed; the service log says why")
        return Answer(200, model_prefix(model) + outputs + b"}", examples=len(batch))

    def _over_bytes(self) -> Answer:
        self.metrics.refused.labels(reason="bytes").inc()
        return _unavailable(
            "overloaded",
            f"{self.settings.max_bytes_in_flight} bytes of requests are in flight; retry shortly",
        )

    def _on_ready(self, model: LoadedModel) -> None:
        s = self.settings
        batcher = Batcher(
            model,
            self.metrics,
            enabled=s.batching,
            max_examples=s.batch_max_size,
            max_wait_seconds=s.batch_max_wait_ms / 1000,
            max_queued=s.max_queued_requests,
            emf=self.emf,
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
        self.emf.serving(p.model, p.version, time.perf_counter() - self._started)
        self.state.ready(model)


async def get_service(request: Request) -> Service:
    """Return the app's Service (a FastAPI dependency).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on its thread
    pool, a thread hop per request for what is an attribute lookup.
    """
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP answer with a JSON body; ``headers`` are added to the content type."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    examples: int = 0  # rows predicted (200 only), for the metrics


_BEARER_CHALLENGE = ((b"www-authenticate", b"Bearer"),)
_RETRY_SOON = ((b"retry-after", b"5"),)
_RETRY_NOW = ((b"retry-after", b"1"),)


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

    docs_off = settings.docs_access == "off"
    app = FastAPI(
        title="ModelDeck inference",
        summary="Serves the promoted version of one PyTorch model.",
        version="1",
        lifespan=lifespan,
        # The service reports through Prometheus and JSON logs. FastAPI's native
        # OpenTelemetry, left on, asks the global providers on every request
        # whether anyone is listening, before any middleware runs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # DOCS_ACCESS=off: no /docs or /openapi.json at all (404). /docs is ours,
        # Swagger UI served locally; no /redoc (inference/apidocs.py).
        docs_url=None,
        redoc_url=None,
        openapi_url=None if docs_off else OPENAPI_URL,
    )
    if not docs_off:
        add_api_docs(app, OPENAPI_URL)
    app.state.service = service
    app.add_middleware(FrontDoor, service=service)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Answer 200 while the process is up, whatever the model's state."""
        # The front door answers GET /healthz itself; this declares it for the docs.
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"model": NotReady}})
    async def readyz(request: Request, service: ServiceDep) -> Response:
        """Answer 200 once the model is loaded, verified and warmed up; else 503 with why."""
        ready = service.ready()
        if ready is None:
            details = service.shows_details(request.headers.get("authorization"))
            return _response(_not_ready(service.state.status, details=details))
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
    async def version(request: Request, service: ServiceDep) -> Response:
        """Describe the loaded model: name, version, SHA-256, format, load time."""
        ready = service.ready()
        if ready is None:
            details = service.shows_details(request.headers.get("authorization"))
            return _response(_not_ready(service.state.status, details=details))
        return JSONResponse(ready[0].version_info())

    @app.post(
        "/predict",
        tags=["model"],
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": (
                    'JSON (the default): `{"inputs": [example, ...]}`. Binary: with '
                    f"`Content-Type: {NPY_CONTENT_TYPE}`, one array in numpy's .npy format "
                    "(`numpy.save`), shape `[n, *input.shape]`, exactly the model's input "
                    "dtype (either byte order); validated like JSON, with the same messages. "
                    "The answer is JSON either way."
                ),
                "content": {
                    "application/json": {"schema": PredictRequest.model_json_schema()},
                    NPY_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def predict(request: Request, service: ServiceDep) -> Response:
        """Run the model on ``inputs``; concurrent requests share forward passes."""
        # Reached only if the front door is bypassed; it answers POST /predict itself.
        headers = request.headers
        answer = await service.predict(
            headers.get("authorization"),
            headers.get("content-length"),
            request.receive,
            headers.get("content-type"),
        )
        return _response(answer)

    if settings.metrics_access != "off":

        @app.get("/metrics", tags=["probes"], response_class=Response)
        async def metrics(service: ServiceDep) -> Response:
            """Prometheus text exposition of the instance's metrics."""
            registry = service.metrics.registry
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def model_prefix(model: LoadedModel) -> bytes:
    """Return the start of a /predict answer, up to and including ``"outputs":``."""
    head = orjson.dumps({"model": model.pointer.model, "version": model.pointer.version})
    return head[:-1] + b',"outputs":'


def _validate(body: bytes, model: LoadedModel, max_examples: int, npy: bool) -> np.ndarray:
    if npy:
        return from_npy(body, model.pointer.input, max_examples=max_examples)
    return to_batch(
        parse_json(body),
        model.pointer.input,
        max_examples=max_examples,
        may_contain_booleans=body_may_contain_booleans(body),
    )


class _OverBudget(Exception):
    """A body without Content-Length grew past the bytes in flight allowed."""


async def _read_limited(
    receive: Receive, limit: int, budget: tuple[Admission, Ticket] | None = None
) -> bytes | None:
    # Content-Length can be absent (chunked) or wrong, so the bytes are counted too.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        if budget is not None and not budget[0].reserve(budget[1], len(chunk)):
            raise _OverBudget()
        if not message.get("more_body", False):
            if not chunks:
                return bytes(chunk)
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _response(answer: Answer) -> Response:
    headers = {key.decode(): value.decode() for key, value in answer.headers}
    return Response(answer.body, answer.status, headers=headers, media_type="application/json")


def _error(status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    return Answer(status, orjson.dumps({"detail": detail}), headers)


_PHASE_DETAILS = {
    Phase.RESOLVING: "resolving the model pointer",
    Phase.DOWNLOADING: "downloading the model",
    Phase.VERIFYING: "verifying the model",
    Phase.LOADING: "loading the model",
}


def _not_ready(status: Status, *, details: bool) -> Answer:
    # Without details only fixed words leave: the phase, and for a failure its cause
    # code; the reason itself (bucket, key, ARNs, AWS's message) stays in the log.
    if details:
        detail = status.detail
    elif status.phase is Phase.FAILED:
        detail = f"the model cannot be served ({status.cause}); the service log says why"
    else:
        detail = _PHASE_DETAILS.get(status.phase, status.phase.value)
    return Answer(
        503,
        orjson.dumps({"status": status.phase.value, "detail": detail}),
        () if status.phase is Phase.FAILED else _RETRY_SOON,
    )


def _unavailable(status: str, detail: str) -> Answer:
    return Answer(503, orjson.dumps({"status": status, "detail": detail}), _RETRY_NOW)
