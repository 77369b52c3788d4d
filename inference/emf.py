"""The service's own metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout.

App Runner ships stdout to CloudWatch Logs, and CloudWatch turns each EMF line
into metric data points: no CloudWatch API call, on the request path or
anywhere. Requests are not written one line each: they are aggregated and one
line per model version is written per ``EMF_FLUSH_SECONDS`` (and only when
something happened), from a thread of its own. Recording a request is a lock
and an append.

Each line follows AWS's EMF specification: ``_aws.Timestamp`` (ms) and one
metric directive with namespace ``EMF_NAMESPACE`` and two dimension sets,
``[<EMF_DIMENSIONS keys>, Model, Version]`` and ``[<EMF_DIMENSIONS keys>, Model]``;
every metric value is a number or an array of at most 100 numbers.

| metric | unit | value per line |
|---|---|---|
| ``Predictions`` | Count | examples answered with 200 by ``/predict`` |
| ``PredictionLatency`` | Milliseconds | latencies of those requests (see :func:`compress`) |
| ``BatchSize`` | Count | examples per forward pass, the same way |
| ``Errors`` | Count | ``/predict`` answers with status >= 500 |
| ``ClientErrors`` | Count | ``/predict`` answers with status 4xx |
| ``ModelLoadTime`` | Seconds | once, when the version becomes ready: start to ready |

The dashboard reads exactly these names (``dashboard/monitoring/catalog.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_VALUES = 100  # the EMF specification's bound on a metric's array of values
MAX_DIMENSION_KEYS = 9  # per dimension set, per the specification
_MAX_SAMPLES = 100_000  # per window and metric; beyond it later values are dropped

emf_logger = logging.getLogger("inference.emf")
# Metric lines are data, not chatter: LOG_LEVEL=WARNING must not silence them.
emf_logger.setLevel(logging.INFO)


def parse_dimensions(text: str | None) -> dict[str, str]:
    """Return ``EMF_DIMENSIONS`` (``Name=value,Name2=value2``) as a dict; raise ValueError."""
    dimensions: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"EMF_DIMENSIONS: {item.strip()!r} is not Name=value")
        if name in ("Model", "Version") or name.startswith(":") or name in dimensions:
            raise ValueError(f"EMF_DIMENSIONS: {name!r} is reserved or repeated")
        if len(name) > 255 or len(value) > 1024 or not (name + value).isprintable():
            raise ValueError(f"EMF_DIMENSIONS: {name!r} is too long or not printable")
        dimensions[name] = value
    if len(dimensions) > MAX_DIMENSION_KEYS - 2:
        raise ValueError(
            f"EMF_DIMENSIONS: at most {MAX_DIMENSION_KEYS - 2} dimensions "
            "(Model and Version are always added)"
        )
    return dimensions


def compress(values: list[float]) -> list[float]:
    """Return ``values`` when at most 100, else 100 evenly spaced quantiles of them.

    The quantiles keep what percentiles and the average are computed from; the
    SampleCount CloudWatch derives is then 100, which is why counts are separate
    metrics (``Predictions``, ``Errors``).
    """
    if len(values) <= MAX_VALUES:
        return values
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, (2 * i + 1) * n // (2 * MAX_VALUES))] for i in range(MAX_VALUES)]


@dataclass
class _Window:
    predictions: int = 0
    errors: int = 0
    client_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[float] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.predictions
            or self.errors
            or self.client_errors
            or self.latencies_ms
            or self.batch_sizes
        )


class EmfMetrics:
    """Aggregates the service's metrics and writes them as EMF lines (see the module doc)."""

    def __init__(
        self,
        *,
        namespace: str,
        dimensions: Mapping[str, str],
        flush_seconds: float,
        enabled: bool = True,
    ) -> None:
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self.flush_seconds = flush_seconds
        self.enabled = enabled
        self._lock = threading.Lock()
        self._window = _Window()
        self._model: tuple[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- recording (any thread) -----------------------------------------------------

    def serving(self, model: str, version: str, load_seconds: float) -> None:
        """The instance now serves ``model`` ``version``; write its ModelLoadTime at once."""
        with self._lock:
            self._model = (model, version)
        if self.enabled:
            self._write(
                {"ModelLoadTime": round(load_seconds, 4)}, units={"ModelLoadTime": "Seconds"}
            )

    def request(self, status: int, seconds: float, examples: int) -> None:
        """Record one answered ``/predict`` (before a model is served: not recorded)."""
        if not self.enabled or self._model is None:
            return
        with self._lock:
            w = self._window
            if status < 400:
                w.predictions += examples
                if len(w.latencies_ms) < _MAX_SAMPLES:
                    w.latencies_ms.append(seconds * 1000)
            elif status >= 500:
                w.errors += 1
            else:
                w.client_errors += 1

    def batch(self, examples: int) -> None:
        """Record one forward pass of ``examples`` rows."""
        if not self.enabled:
            return
        with self._lock:
            if len(self._window.batch_sizes) < _MAX_SAMPLES:
                self._window.batch_sizes.append(examples)

    # --- writing ----------------------------------------------------------------------

    def start(self) -> None:
        """Start writing a line every ``flush_seconds`` (when there is anything to write)."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="emf-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> dict[str, Any] | None:
        """Write the current window as one line, if it holds anything; return the document."""
        with self._lock:
            window, self._window = self._window, _Window()
        if not self.enabled or window.empty() or self._model is None:
            return None
        values: dict[str, Any] = {}
        units: dict[str, str] = {}
        if window.predictions or window.errors or window.client_errors:
            values.update(
                Predictions=window.predictions,
                Errors=window.errors,
                ClientErrors=window.client_errors,
            )
            units.update(Predictions="Count", Errors="Count", ClientErrors="Count")
        if window.latencies_ms:
            values["PredictionLatency"] = [round(v, 3) for v in compress(window.latencies_ms)]
            units["PredictionLatency"] = "Milliseconds"
        if window.batch_sizes:
            values["BatchSize"] = compress(window.batch_sizes)
            units["BatchSize"] = "Count"
        return self._write(values, units=units)

    def document(self, values: Mapping[str, Any], *, units: Mapping[str, str]) -> dict[str, Any]:
        """Return the EMF document carrying ``values`` for the served model version."""
        assert self._model is not None
        model, version = self._model
        keys = list(self.dimensions)
        return {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [[*keys, "Model", "Version"], [*keys, "Model"]],
                        "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
                    }
                ],
            },
            **self.dimensions,
            "Model": model,
            "Version": version,
            **values,
        }

    def _write(self, values: Mapping[str, Any], *, units: Mapping[str, str]) -> dict[str, Any]:
        document = self.document(values, units=units)
        # The JSON formatter writes ``_document`` as the whole line (inference.jsonlog).
        emf_logger.info("metrics", extra={"_document": document})
        return document

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # never let metrics take the service down
                logging.getLogger(__name__).exception(
                    "writing EMF metrics failed", extra={"event": "emf_failed"}
                )
