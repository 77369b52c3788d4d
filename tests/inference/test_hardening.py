"""Running exposed: keys required, bounded work in flight, probes and docs behind keys,
internal error details kept in the log (docs/inference.md, "Running exposed")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from inference.app import Service
from inference.config import ConfigError, load_settings
from tests.inference.conftest import BUCKET, pointer_for, service_of, serving

ROW = {"inputs": [[1, 2, 3, 4]]}
BODY = orjson.dumps(ROW)
KEY = "k-123"


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- Configuration fails closed ------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REQUIRE_API_KEYS", "true"),
        ("METRICS_ACCESS", "keys"),
        ("DOCS_ACCESS", "KEYS"),
        ("ERROR_DETAILS", "keys"),
    ],
)
def test_asking_for_keys_without_any_refuses_to_start(monkeypatch, variable, value) -> None:
    monkeypatch.setenv("MODEL_POINTER_FILE", "/nonexistent/pointer.json")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert f"{variable}={value.lower()} but no API key is configured" in str(error.value)


def test_keys_satisfy_require_api_keys(monkeypatch) -> None:
    monkeypatch.setenv("MODEL_POINTER_FILE", "/nonexistent/pointer.json")
    monkeypatch.setenv("REQUIRE_API_KEYS", "true")
    monkeypatch.setenv("INFERENCE_API_KEYS", KEY)
    assert load_settings().api_keys == (KEY,)


def test_bytes_in_flight_below_one_body_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("MODEL_POINTER_FILE", "/nonexistent/pointer.json")
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("MAX_BYTES_IN_FLIGHT", "2048")
    with pytest.raises(ConfigError, match="MAX_BYTES_IN_FLIGHT .* is below MAX_BODY_BYTES"):
        load_settings()


def test_required_keys_close_predict(serve_cached) -> None:
    with serve_cached(require_api_keys=True, inference_api_keys=KEY) as client:
        assert client.post("/predict", json=ROW).status_code == 401
        assert client.post("/predict", json=ROW, headers=bearer()).status_code == 200


# --- /metrics and the API documents ----------------------------------------------------


def test_metrics_open_keys_off(serve_cached) -> None:
    with serve_cached() as client:
        assert client.get("/metrics").status_code == 200
    with serve_cached(metrics_access="keys", inference_api_keys=KEY) as client:
        refused = client.get("/metrics")
        allowed = client.get("/metrics", headers=bearer())
        wrong = client.get("/metrics", headers=bearer("nope"))
        predict_open = client.post("/predict", json=ROW, headers=bearer()).status_code
    assert (refused.status_code, wrong.status_code, allowed.status_code) == (401, 401, 200)
    assert refused.json() == {"detail": "missing or invalid API key"}
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "inference_http_requests_total" in allowed.text
    assert predict_open == 200
    with serve_cached(metrics_access="off") as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").status_code == 200


# The page, the schema and Swagger UI's files (served locally, inference/apidocs.py).
DOCS = (
    "/docs",
    "/openapi.json",
    "/docs/assets/swagger-ui-bundle.js",
    "/docs/assets/swagger-ui.css",
)


def test_docs_open_keys_off(serve_cached) -> None:
    with serve_cached() as client:
        assert [client.get(p).status_code for p in DOCS] == [200] * 4
        # ReDoc's bundle fetches its logo from a CDN: not served.
        assert client.get("/redoc").status_code == 404
    with serve_cached(docs_access="keys", inference_api_keys=KEY) as client:
        refused = [client.get(p).status_code for p in DOCS]
        allowed = [client.get(p, headers=bearer()).status_code for p in DOCS]
        assert "/predict" in client.get("/openapi.json", headers=bearer()).json()["paths"]
        # Anything under /docs/ is refused before it is looked up.
        assert client.get("/docs/assets/nothing.js").status_code == 401
    assert (refused, allowed) == ([401] * 4, [200] * 4)
    with serve_cached(docs_access="off") as client:
        assert [client.get(p).status_code for p in DOCS] == [404] * 4
        assert client.post("/predict", json=ROW).status_code == 200


# --- Error details ------------------------------------------------------------------------


@pytest.fixture
def failing(aws, artifacts, make_settings) -> Callable[..., Any]:
    """Serve a pointer to an object version that does not exist: startup fails."""

    def run(**overrides: Any) -> Any:
        pointer = pointer_for(
            artifacts["affine"], key="models/demo/9/secret-path.pt", s3_version_id="v-missing"
        )
        return serving(make_settings(pointer, **overrides))

    return run


def test_failure_reason_shown_by_default(failing) -> None:
    with failing() as client:
        detail = client.get("/readyz").json()["detail"]
    assert f"s3://{BUCKET}/models/demo/9/secret-path.pt" in detail


def test_failure_reason_kept_in_the_log_when_details_are_off(failing, caplog) -> None:
    with failing(error_details="off") as client:
        answers = [
            client.get("/readyz"),
            client.get("/version"),
            client.post("/predict", json=ROW),
        ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "failed",
            "detail": "the model cannot be served (object_not_found); the service log says why",
        }
    logged = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "startup_failed"]
    assert any("secret-path.pt" in message for message in logged)


def test_failure_reason_shown_to_key_holders_only(failing) -> None:
    with failing(error_details="keys", inference_api_keys=KEY) as client:
        anonymous = client.get("/readyz").json()["detail"]
        keyed = client.get("/readyz", headers=bearer()).json()["detail"]
        predict = client.post("/predict", json=ROW, headers=bearer()).json()["detail"]
    assert "secret-path.pt" not in anonymous
    assert "secret-path.pt" in keyed and "secret-path.pt" in predict


def test_forward_error_without_details(serve_cached) -> None:
    with serve_cached("probe", error_details="off") as client:
        bad = client.post("/predict", json={"inputs": [[0, -1]]})
        client_error = client.post("/predict", json={"inputs": [[0]]})
    assert bad.status_code == 500
    assert bad.json() == {"detail": "model forward failed; the service log says why"}
    # The client's own mistakes are still explained: they reveal nothing internal.
    assert client_error.status_code == 422
    assert client_error.json()["detail"].endswith("expected a list of 2 items, got 1")


# --- Requests and bytes in flight ----------------------------------------------------------


class SlowBody:
    """An ASGI ``receive`` that sends ``body`` in ``chunks`` once ``go`` is set."""

    def __init__(self, body: bytes, chunks: int = 1) -> None:
        self.go = asyncio.Event()
        size = -(-len(body) // chunks)
        self.parts = [body[i : i + size] for i in range(0, len(body), size)]

    async def __call__(self) -> dict[str, Any]:
        await self.go.wait()
        part = self.parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(self.parts)}


def immediate(body: bytes, chunks: int = 1) -> SlowBody:
    slow = SlowBody(body, chunks)
    slow.go.set()
    return slow


async def _blocked_then(service: Service, first_length: int | None, *later: tuple) -> list:
    """Start one request whose body waits, answer ``later`` meanwhile, then let it finish."""
    held = SlowBody(BODY)
    first = asyncio.ensure_future(
        service.predict(None, None if first_length is None else str(first_length), held)
    )
    await asyncio.sleep(0.05)  # the first request is now in flight, waiting for its body
    answers = [await service.predict(None, length, receive) for length, receive in later]
    held.go.set()
    answers.append(await asyncio.wait_for(first, 30))
    answers.append(await service.predict(None, str(len(BODY)), immediate(BODY)))
    return answers


def test_requests_in_flight_are_capped(serve_cached) -> None:
    with serve_cached(max_requests_in_flight=1) as client:
        service = service_of(client)
        answers = asyncio.run(_blocked_then(service, len(BODY), (str(len(BODY)), immediate(BODY))))
        refused_count = client.get("/metrics").text
    refused, first, after = answers
    assert refused.status == 503
    assert (b"retry-after", b"1") in refused.headers
    assert orjson.loads(refused.body) == {
        "status": "overloaded",
        "detail": "1 requests are in flight; retry shortly",
    }
    assert (first.status, after.status) == (200, 200)
    assert 'inference_requests_refused_total{reason="requests"} 1.0' in refused_count


def test_bytes_in_flight_are_capped(serve_cached) -> None:
    big = orjson.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]] * 30})  # ~500 bytes
    assert 400 < len(big) < 1024
    with serve_cached(max_body_bytes=1024, max_bytes_in_flight=1024) as client:
        service = service_of(client)
        answers = asyncio.run(
            _blocked_then(
                service,
                800,  # declared: reserved before the body is read
                (str(len(big)), immediate(big)),  # 800 + ~500 > 1024
                (None, immediate(big, chunks=4)),  # chunked: refused once its bytes pile up
                (str(len(BODY)), immediate(BODY)),  # small: fits beside the first one
            )
        )
    declared, chunked, small, first, after = answers
    for refused in (declared, chunked):
        assert refused.status == 503
        assert (b"retry-after", b"1") in refused.headers
        assert orjson.loads(refused.body)["detail"] == (
            "1024 bytes of requests are in flight; retry shortly"
        )
    assert small.status == 200
    assert (first.status, after.status) == (200, 200)
    assert service.admission.requests == 0 and service.admission.bytes == 0
