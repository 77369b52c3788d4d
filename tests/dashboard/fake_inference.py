"""A stand-in for the inference service in deployment tests (stdlib + boto3).

Like the real one it reads its pointer from SSM ($MODEL_SSM_PARAMETER) at
startup and reports the pointer's version on /version; it starts in a fraction
of the real one's time because it loads no model. Version names script faults:
"broken" never becomes ready (an artifact that fails to load), "liar" becomes
ready but reports another SHA-256 than its pointer's, "slow" takes
$FAKE_SLOW_SECONDS (default 3) to become ready.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

ssm = boto3.client("ssm", region_name=os.environ.get("AWS_REGION", "us-east-1"))
pointer = json.loads(
    ssm.get_parameter(Name=os.environ["MODEL_SSM_PARAMETER"])["Parameter"]["Value"]
)
READY = "broken" not in pointer["version"]
if "slow" in pointer["version"]:
    import time

    time.sleep(float(os.environ.get("FAKE_SLOW_SECONDS", "3")))
SHA256 = "0" * 64 if "liar" in pointer["version"] else pointer["sha256"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/readyz":
            self._send(200 if READY else 503, {"ready": READY})
        elif self.path == "/version" and READY:
            self._send(
                200,
                {
                    "model": pointer["model"],
                    "version": pointer["version"],
                    "sha256": SHA256,
                    "format": pointer["format"],
                },
            )
        else:
            self._send(503 if not READY else 404, {"detail": "no"})

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
