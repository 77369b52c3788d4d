"""The front door: request IDs, metrics and logs on the fast paths and on FastAPI's."""

from __future__ import annotations

import asyncio
import logging
import re

from tests.inference.test_predict import metric_samples

ROW = {"inputs": [[1, 2, 3, 4]]}


def call(app, method: str, path: str, receive) -> list[dict]:
    """Run one raw ASGI request against ``app``; return the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_every_answer_carries_a_request_id(serve_cached):
    with serve_cached() as client:
        answers = [
            client.post("/predict", json=ROW),
            client.post("/predict", json={"inputs": []}),
            client.get("/healthz"),
            client.get("/readyz"),
            client.get("/version"),
            client.get("/no-such-page"),
        ]
        echoed = client.post("/predict", json=ROW, headers={"X-Request-ID": "trace-42"})
        echoed_probe = client.get("/healthz", headers={"X-Request-ID": "probe-7"})
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 422, 200, 200, 200, 404]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert echoed.headers["x-request-id"] == "trace-42"
    assert echoed_probe.headers["x-request-id"] == "probe-7"


def test_fast_paths_answer_like_the_documented_endpoints(serve_cached):
    with serve_cached() as client:
        health = client.get("/healthz")
        predict = client.post("/predict", json=ROW)
        head = client.head("/healthz")  # not a fast path: FastAPI answers it
    assert health.json() == {"status": "ok"}
    assert health.headers["content-type"] == "application/json"
    assert predict.headers["content-type"] == "application/json"
    assert int(predict.headers["content-length"]) == len(predict.content)
    assert head.status_code == 405


def test_a_client_gone_before_its_body_is_logged_as_499(serve_cached, caplog):
    messages = iter([{"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    with serve_cached() as client, caplog.at_level(logging.INFO, logger="inference.access"):
        sent = call(client.app, "POST", "/predict", receive)
        samples = metric_samples(client.get("/metrics").text)
    assert sent == []
    line = [r for r in caplog.records if r.name == "inference.access"][0]
    assert (line.path, line.status) == ("/predict", 499)
    labels = (("method", "POST"), ("path", "/predict"), ("status", "499"))
    assert samples[("inference_http_requests_total", labels)] == 1


def test_an_unexpected_error_is_a_json_500_and_one_log_line(serve_cached, caplog):
    async def receive() -> dict:
        raise RuntimeError("the server lost the body")

    with serve_cached() as client, caplog.at_level(logging.INFO):
        sent = call(client.app, "POST", "/predict", receive)
        after = client.post("/predict", json=ROW)
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b'{"detail":"internal error"}'
    errors = [r for r in caplog.records if getattr(r, "event", None) == "request_error"]
    assert len(errors) == 1
    assert "the server lost the body" in str(errors[0].exc_info[1])
    assert after.status_code == 200


def test_bodies_in_several_chunks_are_joined(serve_cached):
    def chunks():
        yield b'{"inputs": [[1, 2,'
        yield b" 3, 4]]}"

    with serve_cached() as client:
        response = client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert len(response.json()["outputs"]) == 1
