"""tools/modeldeck_upload.py renews a part URL that S3 refuses as expired:
part URLs live minutes now, and a CI upload of a big file outlives them."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dashboard.aws.clients import reset_clients
from dashboard.registry.models import ModelVersion
from tests.dashboard.factories import token_headers
from tools.modeldeck_upload import main as upload_main

EXPIRED = (
    b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
    b"<Message>Request has expired</Message></Error>"
)


class _S3Front(BaseHTTPRequestHandler):
    """Passes every S3 call on to the embedded AWS, except that the first URL
    handed out for part 1 is treated as expired (403, as S3 answers), for
    good: only a freshly signed URL gets through."""

    upstream = ""
    expired: set[str] = set()
    puts: list[tuple[int, int]] = []  # (part number, status)
    lock = threading.Lock()

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = parse_qs(urlsplit(self.path).query)
        if self.command == "PUT" and "partNumber" in query:
            number = int(query["partNumber"][0])
            signature = query.get("X-Amz-Signature", [""])[0]
            with self.lock:
                first = number == 1 and not self.expired
                if first:
                    self.expired.add(signature)
                refuse = signature in self.expired
                self.puts.append((number, 403 if refuse else 200))
            if refuse:
                if first:
                    # A renewal signed in the same second would be the same
                    # URL; S3 time-stamps signatures to the second.
                    time.sleep(1.1)
                self._answer(403, {"Content-Type": "application/xml"}, EXPIRED)
                return
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}
        }
        answer = httpx.request(
            self.command, self.upstream + self.path, headers=headers, content=body, timeout=30
        )
        keep = {"etag", "x-amz-version-id", "content-type", "last-modified"}
        self._answer(
            answer.status_code,
            {k: v for k, v in answer.headers.items() if k.lower() in keep},
            answer.content if self.command != "HEAD" else b"",
            length=int(answer.headers.get("content-length", len(answer.content))),
        )

    def _answer(
        self, status: int, headers: dict[str, str], body: bytes, length: int | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def s3_front(aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _S3Front.upstream, _S3Front.expired, _S3Front.puts = aws, set(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Front)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    front = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", front)
    reset_clients()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
        reset_clients()


def test_the_ci_tool_renews_an_expired_part_url(
    s3_front: str,
    live_server: Any,
    personas: Any,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import connections

    # The live server's request threads must not keep their connections
    # (CONN_MAX_AGE) past the test, or the test database cannot be dropped.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    settings.UPLOAD_PART_BYTES = 5 * 1024 * 1024
    data = os.urandom(6 * 1024 * 1024)  # two parts
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    key = token_headers(personas["deployer"])["Authorization"].split(" ", 1)[1]
    monkeypatch.setenv("MODELDECK_TOKEN", key)
    assert upload_main(["iris", "tool-1", str(path), "--shape", "4", "--url", live_server.url]) == 0
    attempts = [status for number, status in _S3Front.puts if number == 1]
    assert attempts == [403, 200]  # refused once, then a fresh URL got through
    assert sorted(n for n, status in _S3Front.puts if status == 200) == [1, 2]
    row = ModelVersion.objects.get(model_name="iris", version="tool-1")
    assert row.sha256 == hashlib.sha256(data).hexdigest() and row.size == len(data)


def _run_tool(argv: list[str], result: dict[str, Any]) -> None:
    try:
        result["rc"] = upload_main(argv)
    except SystemExit as exc:  # the tool's own error exits
        result["rc"] = exc.code
    except BaseException as exc:  # a traceback in CI: the defect this guards against
        result["error"] = exc


def test_wait_survives_a_dropped_connection_and_a_rerun_is_a_success(
    aws: str,
    live_server: Any,
    personas: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After `complete` the version exists: a poll that loses its connection
    (or meets a 503 while the dashboard restarts) is retried, and a CI re-run
    of the same file finds it already uploaded instead of failing on 409."""
    from django.db import connections

    from tests.faultproxy import FaultProxy

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    data = os.urandom(4096)
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    key = token_headers(personas["deployer"])["Authorization"].split(" ", 1)[1]
    monkeypatch.setenv("MODELDECK_TOKEN", key)
    with FaultProxy(live_server.url) as proxy:
        dropped = proxy.fail(path_contains="/versions", method="GET", drop=True)
        unavailable = proxy.fail(path_contains="/versions", method="GET", status=503)
        argv = ["iris", "tool-2", str(path), "--shape", "4", "--wait", "--url", proxy.url]
        argv += ["--poll-seconds", "0.05"]
        result: dict[str, Any] = {}
        worker = threading.Thread(target=_run_tool, args=(argv, result))
        worker.start()
        # No Celery worker here: the test plays the validator once both faults
        # were met (the tool is still polling then).
        for _ in range(600):
            if unavailable.hits and not result:
                break
            time.sleep(0.05)
        assert dropped.hits == 1 and unavailable.hits == 1, result
        ModelVersion.objects.filter(model_name="iris", version="tool-2").update(
            status=ModelVersion.Status.VALID
        )
        worker.join(60)
        assert not worker.is_alive()
        assert result == {"rc": 0}
        out = capsys.readouterr()
        assert "tool-2: valid" in out.out
        assert "RemoteProtocolError" in out.err and "HTTP 503" in out.err

        # The CI job is re-run: same file, same version.
        assert upload_main(argv) == 0
        out = capsys.readouterr()
        assert "already uploaded with the same SHA-256" in out.out
        assert "tool-2: valid" in out.out
        assert ModelVersion.objects.filter(model_name="iris", version="tool-2").count() == 1

        # A different file under the same version is a real conflict.
        path.write_bytes(os.urandom(4096))
        assert upload_main(argv) == 3
        assert "different SHA-256" in capsys.readouterr().err

        # Validation that does not end within --wait-timeout: exit 4, the
        # upload itself done.
        argv = ["iris", "tool-3", str(path), "--shape", "4", "--wait", "--url", proxy.url]
        assert upload_main(argv + ["--poll-seconds", "0.05", "--wait-timeout", "0.3"]) == 4
        assert "validation had not ended" in capsys.readouterr().err
        assert ModelVersion.objects.get(model_name="iris", version="tool-3").status == "validating"
