"""A small HTTP proxy for tests, in front of the embedded AWS or the App Runner
stand-in, that can answer chosen requests with AWS errors instead of
forwarding them: throttling, 5xx, access denied. It is how tests inject faults
at the network edge without patching the project's own code.

    with FaultProxy(upstream) as proxy:
        proxy.fail(target="AmazonSSM.PutParameter", times=3, status=400,
                   code="AccessDeniedException")
        ... point AWS_ENDPOINT_URL at proxy.url ...

``drop=True`` closes the connection without any answer instead (httpx:
"Server disconnected without sending a response"), as a restarting server or
a load balancer may. It also stands in front of the dashboard itself.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


@dataclass
class Rule:
    target: str  # X-Amz-Target to match (JSON protocols), or "" for any
    path_contains: str  # part of the path to match (REST protocols), or "" for any
    method: str
    times: int  # how many matching requests to fail (-1: until cleared)
    status: int
    code: str
    message: str
    drop: bool = False
    hits: int = 0


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # X-Amz-Target or "METHOD path" of each request
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(
        self,
        *,
        target: str = "",
        path_contains: str = "",
        method: str = "",
        times: int = 1,
        status: int = 400,
        code: str = "ThrottlingException",
        message: str = "Rate exceeded",
        drop: bool = False,
    ) -> Rule:
        rule = Rule(target, path_contains, method, times, status, code, message, drop)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                with proxy._lock:
                    proxy.seen.append(target or f"{self.command} {self.path}")
                    rule = proxy._match(target, self.path, self.command)
                if rule is not None and rule.drop:
                    self.close_connection = True
                    return
                if rule is not None:
                    self._error(rule, target)
                    return
                self._forward(body)

            def _error(self, rule: Rule, target: str) -> None:
                if target:
                    data = json.dumps({"__type": rule.code, "message": rule.message}).encode()
                    kind = "application/x-amz-json-1.1"
                else:
                    data = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}</Code>"
                        f"<Message>{rule.message}</Message></Error>"
                    ).encode()
                    kind = "application/xml"
                self.send_response(rule.status)
                self.send_header("Content-Type", kind)
                self.send_header("x-amzn-ErrorType", rule.code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes) -> None:
                parts = urlsplit(proxy.upstream)
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                head = self.command == "HEAD"
                for key, value in response.getheaders():
                    if key.lower() in _HOP_BY_HOP or (key.lower() == "content-length" and not head):
                        continue
                    self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _match(self, target: str, path: str, method: str) -> Rule | None:
        for rule in self.rules:
            if rule.times == 0:
                continue
            if rule.target and rule.target != target:
                continue
            if rule.path_contains and rule.path_contains not in path:
                continue
            if rule.method and rule.method != method:
                continue
            rule.hits += 1
            if rule.times > 0:
                rule.times -= 1
            return rule
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
