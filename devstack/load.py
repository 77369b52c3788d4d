"""``make load``: send traffic to the local stack's services, so the metrics
charts move and request lines appear in the logs within seconds.

    python -m devstack.load [--seconds 120] [--rate 20] [--bad 0.05]
                            [--environment staging --environment production]

Each request is a ``POST /predict`` with a valid iris example; a ``--bad``
share of them sends a wrong shape (422, a client error: it shows in the 4xx
chart and never in the 5xx one). The services' stable URLs are the local
stack's (``MODELDECK_<ENV>_PORT``, default 8081 for staging and 8080 for
production). Ctrl-C stops early; a summary of the status codes is printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import threading
import time

import httpx

DEFAULT_PORTS = {"production": 8080, "staging": 8081}


def url_for(environment: str) -> str:
    port = os.environ.get(f"MODELDECK_{environment.upper()}_PORT") or DEFAULT_PORTS.get(environment)
    if port is None:
        raise SystemExit(
            f"unknown environment {environment!r}: set MODELDECK_{environment.upper()}_PORT"
        )
    return f"http://127.0.0.1:{port}"


def example(rng: random.Random) -> list[float]:
    return [
        round(rng.uniform(4.3, 7.9), 1),
        round(rng.uniform(2.0, 4.4), 1),
        round(rng.uniform(1.0, 6.9), 1),
        round(rng.uniform(0.1, 2.5), 1),
    ]


def run(
    urls: list[str], *, seconds: float, rate: float, bad: float, seed: int = 1
) -> dict[str, int]:
    """Send ``rate`` requests per second (spread over ``urls``) for ``seconds``."""
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    threads = max(1, min(16, int(rate // 5) + 1))

    def worker(index: int) -> None:
        local = random.Random(seed + index)
        interval = threads / rate
        next_at = time.monotonic() + local.uniform(0, interval)
        with httpx.Client(timeout=10) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                url = urls[local.randrange(len(urls))]
                batch = [example(local) for _ in range(local.randint(1, 4))]
                if local.random() < bad:
                    batch = [[1.0, 2.0]]  # the wrong shape: 422
                try:
                    response = client.post(f"{url}/predict", json={"inputs": batch})
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    counts[key] += 1

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    try:
        while any(t.is_alive() for t in workers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop.set()
    for thread in workers:
        thread.join(timeout=15)
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second, all services"
    )
    parser.add_argument(
        "--bad", type=float, default=0.05, help="share of requests with a bad payload"
    )
    parser.add_argument(
        "--environment", action="append", choices=sorted(DEFAULT_PORTS), help="default: both"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or not 0 <= args.bad <= 1:
        parser.error("--seconds and --rate must be positive, --bad between 0 and 1")
    environments = args.environment or ["staging", "production"]
    urls = [url_for(e) for e in environments]
    print(
        f"sending {args.rate:g} requests/s for {args.seconds:g} s to {', '.join(urls)} "
        f"({args.bad:.0%} bad payloads); watch the environments' Metrics and Logs pages",
        flush=True,
    )
    counts = run(urls, seconds=args.seconds, rate=args.rate, bad=args.bad)
    print("status codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0 if counts else 1


if __name__ == "__main__":
    sys.exit(main())
