"""A fake App Runner instance for the stand-in's tests (stdlib only).

Run as ``python apprunner_fake_instance.py``; it listens on ``$PORT``. Its
behaviour is read once at startup from the JSON file named by
``$FAKE_BEHAVIOUR_FILE`` (so a test rewrites the file between deployments):

    version         reported by GET /version (default: $VERSION or "v0")
    mode            "ok" | "never_ready" (503 on /readyz forever) | "exit" (exit 3 at once)
    ready_delay     seconds before /readyz answers 200
    ready_file      /readyz answers 200 only once this file exists
    ignore_sigterm  keep running on SIGTERM (the stand-in must SIGKILL it)
    spawn_child     fork a long-sleeping child into the same process group

Endpoints: /healthz, /readyz, /version (version, pid, child_pid, the port it
listens on, $HOST), /slow?seconds=S, /hold?started=F&release=G
(touch F, answer once G exists), /echo... (any method: echoes the request).

Each instance writes its pid (and its child's) as files into ``$FAKE_PID_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

STARTED = time.monotonic()


def load_behaviour() -> dict:
    path = os.environ.get("FAKE_BEHAVIOUR_FILE")
    if path and Path(path).exists():
        return json.loads(Path(path).read_text())
    return {}


BEHAVIOUR = load_behaviour()
VERSION = BEHAVIOUR.get("version", os.environ.get("VERSION", "v0"))
CHILD_PID: int | None = None


def ready() -> bool:
    if BEHAVIOUR.get("mode") == "never_ready":
        return False
    if time.monotonic() - STARTED < float(BEHAVIOUR.get("ready_delay", 0)):
        return False
    ready_file = BEHAVIOUR.get("ready_file")
    return not ready_file or Path(ready_file).exists()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body would
    # wait for the client's delayed ACK (~40 ms), which real servers (uvicorn)
    # do not do, and which would hide the proxy's own latency.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the stand-in's log to what the tests print on purpose

    def _answer(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if url.path == "/healthz":
            self._answer(200, {"ok": True})
        elif url.path == "/readyz":
            if ready():
                self._answer(200, {"ready": True})
            else:
                self._answer(503, {"ready": False, "phase": "loading"})
        elif url.path == "/version":
            self._answer(
                200,
                {
                    "version": VERSION,
                    "pid": os.getpid(),
                    "child_pid": CHILD_PID,
                    "port": int(os.environ["PORT"]),
                    "host_env": os.environ.get("HOST"),
                },
            )
        elif url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["1"])[0]))
            self._answer(200, {"version": VERSION, "slept": True})
        elif url.path == "/hold":
            # Answers only once the test creates the ``release`` file: a request
            # that is deterministically in flight.
            query = parse_qs(url.query)
            Path(query["started"][0]).touch()
            deadline = time.monotonic() + 120
            while not Path(query["release"][0]).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            self._answer(200, {"version": VERSION, "held": True})
        elif url.path.startswith("/echo"):
            self._answer(
                201,
                {
                    "version": VERSION,
                    "method": self.command,
                    "path": url.path,
                    "query": url.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("latin-1"),
                },
                headers={"X-Fake-Instance": VERSION},
            )
        else:
            self._answer(404, {"error": "not found", "path": url.path})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def main() -> None:
    global CHILD_PID
    if BEHAVIOUR.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid_dir = os.environ.get("FAKE_PID_DIR")
    if BEHAVIOUR.get("spawn_child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        CHILD_PID = child.pid
    if pid_dir:
        for pid in (os.getpid(), CHILD_PID):
            if pid:
                Path(pid_dir, str(pid)).touch()
    print(f"fake instance {VERSION} starting on port {os.environ['PORT']}", flush=True)
    print(f"fake instance {VERSION} says hello on stderr", file=sys.stderr, flush=True)
    if BEHAVIOUR.get("mode") == "exit":
        print("fatal: cannot load the model (fake)", file=sys.stderr, flush=True)
        sys.exit(3)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
