"""Dynamic batching: concurrent requests share forward passes on one dedicated thread.

Requests are validated before they get here, so what is queued always fits the
model's declared input. The worker takes the oldest waiting request, adds every
other waiting request that still fits in ``BATCH_MAX_SIZE`` examples (waiting up
to ``BATCH_MAX_WAIT_MS`` for more to arrive; 0 means take what is queued now),
concatenates them, runs one forward, and hands each request exactly its own rows.
If the batched forward raises, or its output cannot be cut into rows, every
member is run again on its own, so one poisonous request never fails its
neighbours. With batching off every request is its own forward, in arrival order.

Torch runs on the worker thread, never on the event loop, so health checks and
metrics stay fast while the model is saturated.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from inference.emf import EmfMetrics
from inference.loader import forward_error_summary
from inference.metrics import Metrics
from inference.outputs import NotSplittable, UnsupportedOutput, encode_split, encode_whole
from inference.state import LoadedModel

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Overloaded(Exception):
    """The queue is full; the request was not accepted."""


class ShuttingDown(Exception):
    """The batcher stopped accepting work because the process is shutting down."""


class ForwardFailed(Exception):
    """The model raised on this request's examples, even when run on their own."""


@dataclass
class _Job:
    inputs: np.ndarray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bytes]

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])


class Batcher:
    """Owns the model's forward passes. Create, :meth:`start`, :meth:`submit`, :meth:`stop`."""

    def __init__(
        self,
        model: LoadedModel,
        metrics: Metrics,
        *,
        enabled: bool,
        max_examples: int,
        max_wait_seconds: float,
        max_queued: int,
        emf: EmfMetrics | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.emf = emf
        self.enabled = enabled
        self.max_examples = max_examples
        self.max_wait_seconds = max_wait_seconds
        self.max_queued = max_queued
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="inference-batcher", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    async def submit(self, inputs: np.ndarray) -> bytes:
        """Return the JSON encoding of the model's outputs for exactly ``inputs``' rows.

        Raises Overloaded when ``max_queued`` requests are already waiting,
        ShuttingDown after :meth:`stop`, ForwardFailed when the model raises.
        """
        loop = asyncio.get_running_loop()
        job = _Job(inputs=inputs, loop=loop, future=loop.create_future())
        with self._cond:
            if self._stopping:
                raise ShuttingDown()
            if len(self._queue) >= self.max_queued:
                raise Overloaded()
            self._queue.append(job)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()
        return await job.future

    def stop(self, timeout: float | None = None) -> bool:
        """Refuse new work, finish everything queued, and stop; False if not done in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # pragma: no cover - _run handles model errors
                # Keep the worker alive whatever happens; the waiting clients get a 500.
                logger.exception("batch worker error", extra={"event": "batch_error"})
                for job in batch:
                    _resolve(job, error=exc)

    def _next_batch(self) -> list[_Job]:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return []
                self._cond.wait()
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            if self.enabled:
                deadline = time.monotonic() + self.max_wait_seconds
                while True:
                    while self._queue and rows + self._queue[0].rows <= self.max_examples:
                        job = self._queue.popleft()
                        batch.append(job)
                        rows += job.rows
                    full = rows >= self.max_examples or bool(self._queue)
                    remaining = deadline - time.monotonic()
                    if full or remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
            self.metrics.queue_depth.set(len(self._queue))
            return batch

    def _run(self, batch: list[_Job]) -> None:
        # A client that disconnected has its future cancelled; its rows are skipped.
        live = [job for job in batch if not job.future.done()]
        if not live:
            return
        if len(live) == 1:
            self._run_alone(live[0])
            return
        bounds = []
        start = 0
        for job in live:
            bounds.append((start, start + job.rows))
            start += job.rows
        inputs = np.concatenate([job.inputs for job in live])
        try:
            encoded = self._forward(inputs, len(live), lambda out: encode_split(out, bounds))
        except NotSplittable as exc:
            logger.info(
                "batched output cannot be split per request (%s); running requests one by one",
                exc,
                extra={"event": "batch_unsplittable"},
            )
        except Exception as exc:
            self.metrics.forward_failures.inc()
            logger.warning(
                "batched forward of %d requests failed (%s); running them one by one",
                len(live),
                forward_error_summary(exc),
                extra={"event": "batch_failed"},
            )
        else:
            _resolve_all(live, encoded)
            return
        for job in live:
            self._run_alone(job)

    def _run_alone(self, job: _Job) -> None:
        try:
            encoded = self._forward(job.inputs, 1, encode_whole)
        except UnsupportedOutput as exc:
            _resolve(job, error=ForwardFailed(str(exc)))
        except Exception as exc:
            self.metrics.forward_failures.inc()
            summary = forward_error_summary(exc)
            logger.warning(
                "forward failed: %s", summary, extra={"event": "forward_failed", "rows": job.rows}
            )
            _resolve(job, error=ForwardFailed(summary))
        else:
            _resolve(job, result=encoded)

    def _forward(self, inputs: np.ndarray, requests: int, encode: Callable[[Any], T]) -> T:
        self.metrics.batch_examples.observe(inputs.shape[0])
        if self.emf is not None:
            self.emf.batch(inputs.shape[0])
        self.metrics.batch_requests.observe(requests)
        self.metrics.forward_in_progress.set(1)
        started = time.perf_counter()
        try:
            return encode(self.model.forward(inputs))
        finally:
            self.metrics.forward_seconds.observe(time.perf_counter() - started)
            self.metrics.forward_in_progress.set(0)


def _resolve_all(jobs: list[_Job], results: list[bytes]) -> None:
    # One callback per event loop for the whole batch rather than one per request:
    # each call_soon_threadsafe wakes the loop and takes its lock.
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bytes]]] = {}
    for job, result in zip(jobs, results, strict=True):
        by_loop.setdefault(job.loop, []).append((job, result))

    def settle(pairs: list[tuple[_Job, bytes]]) -> None:
        for job, result in pairs:
            if not job.future.done():
                job.future.set_result(result)

    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, pairs)
        except RuntimeError:
            pass  # the event loop is gone (shutdown); nobody is waiting any more


def _resolve(job: _Job, *, result: bytes | None = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result or b"null")

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the event loop is gone (shutdown); nobody is waiting any more
