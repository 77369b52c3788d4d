"""Prometheus metrics of one service instance, in a registry of its own.

A private registry (not the global default) keeps two apps in one process, as
in the tests, from sharing or double-registering series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Label values for paths are the routes themselves; anything else (scanners,
# typos) is folded into one value so that the series count stays bounded.
KNOWN_PATHS = frozenset(
    {"/healthz", "/readyz", "/version", "/predict", "/metrics", "/docs", "/openapi.json"}
)
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """Every series the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inference_http_requests",
            "HTTP requests answered, by route, method and status code.",
            ["path", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "inference_http_request_duration_seconds",
            "Time from receiving a request to sending the end of its answer.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_examples = Histogram(
            "inference_batch_examples",
            "Examples (rows) per forward pass.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "inference_batch_requests",
            "Requests coalesced into one forward pass.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.forward_seconds = Histogram(
            "inference_forward_duration_seconds",
            "Duration of one forward pass including output encoding.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.forward_failures = Counter(
            "inference_forward_failures",
            "Forward passes that raised (a failed batch is then retried per request).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Requests waiting for the model.", registry=r
        )
        self.forward_in_progress = Gauge(
            "inference_forward_in_progress", "1 while a forward pass runs.", registry=r
        )
        self.model_info = Info(
            "inference_model", "The model version this instance serves.", registry=r
        )
        self.refused = Counter(
            "inference_requests_refused",
            "Requests refused with 503 at the in-flight bounds, by the bound reached.",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("inference_ready", "1 once the model is ready to serve.", registry=r)
        self.startup_phase_seconds = Gauge(
            "inference_startup_phase_duration_seconds",
            "How long each startup phase took.",
            ["phase"],
            registry=r,
        )
        self.startup_bytes_downloaded = Gauge(
            "inference_startup_downloaded_bytes",
            "Bytes fetched from S3 at startup (0 on a cache hit).",
            registry=r,
        )
