"""``python -m inference``: serve the configured model over HTTP (the image's command).

One uvicorn worker per process, deliberately: a second worker would hold a
second copy of the model in memory, split requests so they batch less well,
and make readiness depend on several processes. Torch already uses every core
inside a forward pass (TORCH_NUM_THREADS). Scale out with more instances.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from types import FrameType

import prometheus_client
import uvicorn

from inference.app import create_app
from inference.config import ConfigError, load_settings
from inference.jsonlog import configure_logging

logger = logging.getLogger("inference")


def main() -> int:
    """Run the server until SIGTERM/SIGINT; return the process exit code."""
    configure_logging("INFO")
    try:
        settings = load_settings()
    except ConfigError as exc:
        logger.error("%s", exc, extra={"event": "config_invalid"})
        return 2
    configure_logging(settings.log_level)
    # The *_created series double the exposition for no use on a dashboard.
    prometheus_client.disable_created_metrics()
    app = create_app(settings)
    # A forward runs without the interpreter lock, but the batcher needs it back
    # to hand the results over; with Python's 5 ms default it waited that long
    # behind a busy event loop (docs/inference.md, "Performance").
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    logger.info(
        "starting on %s:%d",
        settings.host,
        settings.port,
        extra={
            "event": "service_start",
            "batching": settings.batching,
            "batch_max_size": settings.batch_max_size,
            "batch_max_wait_ms": settings.batch_max_wait_ms,
            "torch_num_threads": settings.torch_num_threads,
            "api_keys": len(settings.api_keys),
            "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        },
    )
    # Importing torch and friends leaves ~200k long-lived objects that every full
    # collection walks again (~0.1 s each here): under /predict load that made
    # /healthz p99 ~110 ms instead of ~6 ms. Frozen objects are skipped by the
    # cyclic GC; reference counting still frees them. See docs/inference.md.
    gc.collect()
    gc.freeze()
    # uvicorn finishes in-flight requests on SIGTERM, restores the previous handler
    # and re-raises the signal; with this handler in place the re-raise ends the
    # process with status 0, which orchestrators read as a clean stop.
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,  # keep the JSON handlers configured above
        access_log=False,  # the app logs one line per request itself
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds) or None,
    )
    return 0


def _exit_after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
