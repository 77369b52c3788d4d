"""A light stand-in for the inference service, for benchmarks and tests only.

    python -I devstack/apprunner/light_instance.py      (listens on $HOST:$PORT)

It reads the model pointer the way the inference service does (contract
section 3): ``MODEL_POINTER`` if set, else SSM's ``GetParameter`` of
``MODEL_SSM_PARAMETER``, which may carry SSM's version selector
(``/models/iris/staging:7``) so that a pinned revision reads exactly that
pointer version. It then answers

    GET /healthz   200 while the process is up
    GET /readyz    200 once the pointer is read and names a version and a
                   SHA-256, else 503 with the phase or the error
    GET /version   {"model", "version", "sha256", "format", "loaded_at"} of the pointer

and nothing else: it downloads no artifact and loads no model, so 50 of them
start in well under a second each on one machine. ``bench/bench_deployments.py``
runs them to measure the dashboard's deployment control plane (50 environments
deploying at once) without measuring 50 PyTorch start-ups.

Standard library only, and only its small modules (no http.server, urllib.request or
email: an instance is ready after ~45 ms of CPU here instead of ~100 ms), since the
benchmark starts 50 of them on the machine it measures: HTTP is spoken over plain
sockets (HTTP/1.1 keep-alive for the stand-in's probes and proxy, one HTTP/1.0
request to SSM). The SSM request is signed with SigV4 here, with
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, and sent to
``AWS_ENDPOINT_URL_SSM`` or ``AWS_ENDPOINT_URL`` (required: this is for the
embedded AWS; it never talks to real AWS and refuses to start without an
endpoint). Never run it as a real environment's service: it serves no
predictions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_RETRY_SECONDS = 0.2
_GIVE_UP_SECONDS = 60.0


class State:
    """What the instance answers: the phase until the pointer is read, then it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = "resolving"
        self.error = ""
        self.pointer: dict[str, Any] | None = None
        self.loaded_at = ""

    def ready(self, pointer: dict[str, Any]) -> None:
        with self.lock:
            self.pointer = pointer
            self.phase = "ready"
            self.loaded_at = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")

    def failed(self, error: str) -> None:
        with self.lock:
            self.phase, self.error = "failed", error


STATE = State()


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


class Refused(Exception):
    """SSM answered with an error (a bad name or version): asking again will not help."""


def signed_request(
    endpoint: str, *, region: str, service: str, target: str, body: bytes
) -> tuple[str, int, bytes]:
    """(host, port, the raw bytes of a SigV4-signed AWS JSON 1.1 POST to ``endpoint``)."""
    url = urlsplit(endpoint)
    if url.scheme != "http" or not url.hostname:
        raise RuntimeError(f"the light instance speaks plain HTTP only, not {endpoint}")
    now = dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "host": url.netloc,
        "x-amz-date": amz_date,
        "x-amz-target": target,
    }
    signed = ";".join(sorted(headers))
    path = url.path or "/"
    canonical = "\n".join(
        [
            "POST",
            path,
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(("AWS4" + os.environ.get("AWS_SECRET_ACCESS_KEY", "test")).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    access = os.environ.get("AWS_ACCESS_KEY_ID", "test")
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    headers["content-length"] = str(len(body))
    headers["connection"] = "close"
    head = f"POST {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return url.hostname, url.port or 80, (head + "\r\n").encode() + body


def read_parameter(name: str) -> str:
    """The value of SSM parameter ``name`` (with or without a ``:version``)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SSM") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise RuntimeError("the light instance needs AWS_ENDPOINT_URL (the embedded AWS)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    host, port, request = signed_request(
        endpoint,
        region=region,
        service="ssm",
        target="AmazonSSM.GetParameter",
        body=json.dumps({"Name": name}).encode(),
    )
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise Refused(f"{status} {body[:300]!r}")
    return str(json.loads(body)["Parameter"]["Value"])


def parse_pointer(text: str, *, source: str) -> dict[str, Any]:
    """The pointer document; ValueError naming ``source`` when it is not one."""
    try:
        pointer = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"malformed model pointer from {source}: {exc}") from exc
    if not isinstance(pointer, dict) or pointer.get("schema") != 1:
        raise ValueError(f"malformed model pointer from {source}: schema must be 1")
    if not isinstance(pointer.get("version"), str) or not pointer["version"]:
        raise ValueError(f"malformed model pointer from {source}: no version")
    if not isinstance(pointer.get("sha256"), str) or not _SHA256.fullmatch(pointer["sha256"]):
        raise ValueError(f"malformed model pointer from {source}: no SHA-256")
    return pointer


def resolve() -> None:
    """Read the pointer (retrying while the embedded AWS does not answer)."""
    inline = os.environ.get("MODEL_POINTER")
    name = os.environ.get("MODEL_SSM_PARAMETER")
    deadline = time.monotonic() + _GIVE_UP_SECONDS
    while True:
        try:
            if inline:
                STATE.ready(parse_pointer(inline, source="MODEL_POINTER"))
            elif name:
                STATE.ready(parse_pointer(read_parameter(name), source=f"SSM parameter {name}"))
            else:
                STATE.failed("no model configured: set MODEL_POINTER or MODEL_SSM_PARAMETER")
            return
        except ValueError as exc:
            STATE.failed(str(exc))
            return
        except Refused as exc:
            STATE.failed(f"SSM refused {name}: {exc}")
            return
        except (OSError, RuntimeError, KeyError, IndexError) as exc:
            if time.monotonic() > deadline:
                STATE.failed(f"could not read the pointer: {exc}")
                return
            time.sleep(_RETRY_SECONDS)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def answer(path: str) -> tuple[int, object]:
    """The status and JSON body for ``GET path``."""
    with STATE.lock:
        pointer, phase, error, loaded_at = STATE.pointer, STATE.phase, STATE.error, STATE.loaded_at
    if path == "/healthz":
        return 200, {"status": "ok"}
    if path not in {"/readyz", "/version"}:
        return 404, {"detail": "the light instance serves /healthz, /readyz, /version"}
    if pointer is None:
        return 503, {"status": phase, "detail": error or phase}
    if path == "/readyz":
        return 200, {"status": "ready", "version": pointer["version"]}
    return 200, {
        "model": pointer.get("model"),
        "version": pointer["version"],
        "sha256": str(pointer["sha256"]).lower(),
        "format": pointer.get("format"),
        "loaded_at": loaded_at,
    }


def serve(conn: socket.socket) -> None:
    """HTTP/1.1 on one connection: GET and HEAD, kept alive until the client
    closes it or asks to."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk or len(buffer) > 65536:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = (lines[0].split(" ") + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            while len(buffer) < length:  # a body is not expected; read past it
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            if method in {"GET", "HEAD"}:
                status, payload = answer(target.split("?", 1)[0])
            else:
                status, payload = 405, {"detail": "GET only"}
            body = json.dumps(payload).encode()
            close = headers.get("connection", "").lower() == "close" or version != "HTTP/1.1"
            conn.sendall(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    + ("Connection: close\r\n" if close else "")
                    + "\r\n"
                ).encode()
                + (body if method != "HEAD" else b"")
            )
            if close:
                return
    except OSError:
        return
    finally:
        conn.close()


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    server = socket.create_server((host, port), backlog=64)
    threading.Thread(target=resolve, daemon=True, name="resolve").start()
    print(f"light instance listening on {host}:{port}", flush=True)
    try:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
