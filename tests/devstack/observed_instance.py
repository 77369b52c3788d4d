"""A fake inference instance that logs like the real one (stdlib only).

Listens on ``$PORT``. ``GET /readyz`` answers 200. ``GET /status/<code>``
answers that status; like the inference service, each such request prints one
JSON request line and one CloudWatch EMF line (namespace ModelDeck/Inference,
dimension sets [Environment, Model, Version] and [Environment, Model], a
Predictions count and a PredictionLatency histogram), and a 5xx also prints
an ERROR line on stderr.
``$VERSION`` is the model version it claims.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "1.0")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        started = time.perf_counter()
        if self.path == "/readyz":
            status = 200
        elif self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[-1])
        else:
            status = 404
        body = json.dumps({"status": status, "version": VERSION}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if not self.path.startswith("/status/"):
            return
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        line = {
            "level": "error" if status >= 500 else "info",
            "event": "request",
            "method": "GET",
            "path": self.path,
            "status": status,
            "latency_ms": latency_ms,
            "version": VERSION,
            "request_id": uuid.uuid4().hex,
        }
        # As the inference service writes them (docs/inference.md): two dimension
        # sets, a count and the latencies of the interval as an array.
        emf = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": "ModelDeck/Inference",
                        "Dimensions": [
                            ["Environment", "Model", "Version"],
                            ["Environment", "Model"],
                        ],
                        "Metrics": [
                            {"Name": "Predictions", "Unit": "Count"},
                            {"Name": "PredictionLatency", "Unit": "Milliseconds"},
                        ],
                    }
                ],
            },
            "Environment": "staging",
            "Model": "iris",
            "Version": VERSION,
            "Predictions": 3,
            # A plain array, as AWS's EMF specification allows and inference/emf.py writes.
            "PredictionLatency": [1.0, 2.0, 30.0],
        }
        print(json.dumps(line), flush=True)
        print(json.dumps(emf), flush=True)
        if status >= 500:
            print(f"ERROR request failed with {status}", file=sys.stderr, flush=True)


def main() -> None:
    print(json.dumps({"level": "info", "event": "startup", "version": VERSION}), flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
