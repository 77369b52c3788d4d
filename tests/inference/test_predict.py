"""POST /predict and the other endpoints, against real tiny models served from the cache."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

W = np.arange(12, dtype=np.float64).reshape(3, 4) / 10
B = np.arange(3, dtype=np.float64)


def affine(rows):
    return (np.asarray(rows, dtype=np.float64) @ W.T + B).tolist()


@pytest.mark.parametrize("name", ["affine", "affine_traced", "affine_export", "affine64"])
def test_single_tensor_output_is_its_rows(serve_cached, name):
    rows = [[1, 2, 3, 4], [0.5, -1, 0, 2]]
    with serve_cached(name) as client:
        response = client.post("/predict", json={"inputs": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "demo"
    assert body["version"] == "1.0"
    assert np.allclose(body["outputs"], affine(rows), rtol=1e-6)


def test_tuple_output_is_a_list_of_outputs(serve_cached):
    with serve_cached("tuple") as client:
        response = client.post("/predict", json={"inputs": [[1, 2, 3], [4, 5, 6]]})
    assert response.status_code == 200
    assert response.json()["outputs"] == [[6.0, 15.0], [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]]


def test_dict_output_is_an_object_of_outputs(serve_cached):
    with serve_cached("dict") as client:
        response = client.post("/predict", json={"inputs": [[1, 2, 3]]})
    assert response.status_code == 200
    assert response.json()["outputs"] == {"sum": [6.0], "double": [[2.0, 4.0, 6.0]]}


@pytest.mark.parametrize("name", ["int64", "int32"])
def test_integer_models(serve_cached, name):
    with serve_cached(name) as client:
        ok = client.post("/predict", json={"inputs": [[1, -2, 3.0]]})
        fraction = client.post("/predict", json={"inputs": [[1, 1.5, 3]]})
    assert ok.json()["outputs"] == [[2, -4, 6]]
    assert fraction.status_code == 422
    assert fraction.json() == {"detail": "inputs[0][1]: expected an integer, got 1.5"}


def test_bool_model(serve_cached):
    with serve_cached("bool") as client:
        ok = client.post("/predict", json={"inputs": [[True, False]]})
        number = client.post("/predict", json={"inputs": [[1, 0]]})
    assert ok.json()["outputs"] == [[False, True]]
    assert number.status_code == 422
    assert number.json()["detail"] == "inputs[0][0]: expected true or false, got number"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b'{"inputs": [[1, 2, 3, 4], [1, "x", 3, 4]]}',
            "inputs[1][1]: expected a number, got string",
        ),
        (b'{"inputs": [[1, 2, 3]]}', "inputs[0]: expected a list of 4 items, got 3"),
        (b'{"inputs": [[1, NaN, 3, 4]]}', "inputs[0][1]: non-finite number (nan) is not allowed"),
        (
            b'{"inputs": [[1, 2, Infinity, 4]]}',
            "inputs[0][2]: non-finite number (inf) is not allowed",
        ),
        (
            b'{"inputs": [[-Infinity, 2, 3, 4]]}',
            "inputs[0][0]: non-finite number (-inf) is not allowed",
        ),
        (b'{"inputs": [[1, 2, 3, 1e999]]}', "inputs[0][3]: non-finite number (inf) is not allowed"),
        (b'{"inputs": [[1, 2, 3, true]]}', "inputs[0][3]: expected a number, got boolean"),
        (b'{"inputs": []}', "inputs: empty batch, send at least one example"),
        (
            b'{"inputs": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]}',
            "inputs: 3 examples exceed the limit of 2 per request",
        ),
        (b"[]", 'body: expected a JSON object with an "inputs" list, got list'),
    ],
)
def test_bad_input_is_422_naming_the_problem(serve_cached, body, detail):
    with serve_cached(max_batch_size=2) as client:
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        after = client.post("/predict", json={"inputs": [[0, 0, 0, 0]]})
    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert after.status_code == 200  # nothing about a bad request sticks


def test_invalid_json_is_422(serve_cached):
    with serve_cached() as client:
        response = client.post(
            "/predict", content=b'{"inputs": [[1, 2,', headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("invalid JSON: ")


def test_body_limit_by_content_length(serve_cached):
    with serve_cached(max_body_bytes=2048) as client:
        big = json.dumps({"inputs": [[0.125, 0.25, 0.5, 1.0]] * 200}).encode()
        assert len(big) > 2048
        response = client.post(
            "/predict", content=big, headers={"content-type": "application/json"}
        )
        frame = json.dumps({"inputs": [[1, 2, 3, 4]], "pad": ""}).encode()
        at_limit = json.dumps({"inputs": [[1, 2, 3, 4]], "pad": "x" * (2048 - len(frame))}).encode()
        exact = client.post(
            "/predict", content=at_limit, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json() == {"detail": "request body exceeds 2048 bytes"}
    assert len(at_limit) == 2048
    assert exact.status_code == 200


def test_body_limit_counts_streamed_bytes(serve_cached):
    """A chunked body has no Content-Length; the bytes themselves are counted."""

    def chunks():
        yield b'{"inputs": [[1, 2, 3, 4]], "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    def small():
        yield b'{"inputs": [[1, 2, 3, 4]]}'

    with serve_cached(max_body_bytes=4096) as client:
        too_big = client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        fine = client.post(
            "/predict", content=small(), headers={"content-type": "application/json"}
        )
    assert too_big.status_code == 413
    assert fine.status_code == 200


def test_forward_error_is_500_and_the_service_goes_on(serve_cached):
    with serve_cached("probe") as client:
        bad = client.post("/predict", json={"inputs": [[0, -1]]})
        good = client.post("/predict", json={"inputs": [[0, 3]]})
    assert bad.status_code == 500
    assert (
        bad.json()["detail"]
        == "model forward failed: Error: builtins.RuntimeError: negative input in column 1"
    )
    assert good.json()["outputs"] == [[0.0, 6.0]]


def test_version_and_readyz(serve_cached, artifacts):
    with serve_cached() as client:
        ready = client.get("/readyz")
        version = client.get("/version")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "demo", "version": "1.0"}
    body = version.json()
    assert body["sha256"] == artifacts["affine"].sha256
    assert body["format"] == "torchscript"
    assert (body["model"], body["version"]) == ("demo", "1.0")
    assert body["loaded_at"].endswith("Z")


def test_openapi_and_docs(serve_cached):
    with serve_cached() as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert docs.status_code == 200
    predict = schema["paths"]["/predict"]["post"]
    body_schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert "inputs" in body_schema["properties"]
    assert {"200", "401", "413", "422", "503"} <= set(predict["responses"])
    assert {"/healthz", "/readyz", "/version", "/metrics"} <= set(schema["paths"])


def test_docs_page_loads_nothing_from_elsewhere(serve_cached):
    """/docs works on a private network: every file it loads comes from the service."""
    from importlib.resources import files

    static = files("fastapi_offline") / "static"
    with serve_cached() as client:
        page = client.get("/docs")
        links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
        answers = {link: client.get(link) for link in links}
    assert page.status_code == 200
    assert not re.search(r"https?://", page.text), page.text
    assert sorted(links) == [
        "/docs/assets/favicon.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ]
    for link, answer in answers.items():
        assert answer.status_code == 200, link
        assert answer.content == (static / link.rpartition("/")[2]).read_bytes()
    assert "url: '/openapi.json'" in page.text
    # The online validator's badge would send the schema's URL to validator.swagger.io.
    assert '"validatorUrl": null' in page.text


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics(serve_cached, artifacts):
    with serve_cached() as client:
        client.post("/predict", json={"inputs": [[1, 2, 3, 4]] * 3})
        client.post("/predict", json={"inputs": [[1, 2, 3]]})
        text = client.get("/metrics").text
    samples = metric_samples(text)
    assert (
        samples[
            (
                "inference_http_requests_total",
                (("method", "POST"), ("path", "/predict"), ("status", "200")),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "inference_http_requests_total",
                (("method", "POST"), ("path", "/predict"), ("status", "422")),
            )
        ]
        == 1
    )
    assert samples[("inference_http_request_duration_seconds_count", (("path", "/predict"),))] == 2
    assert samples[("inference_batch_examples_count", ())] == 1
    assert samples[("inference_batch_examples_sum", ())] == 3
    assert samples[("inference_queue_depth", ())] == 0
    assert samples[("inference_ready", ())] == 1
    info = [labels for (name, labels) in samples if name == "inference_model_info"]
    assert dict(info[0]) == {
        "model": "demo",
        "version": "1.0",
        "sha256": artifacts["affine"].sha256,
        "format": "torchscript",
    }
    phases = {
        dict(labels)["phase"]
        for (name, labels) in samples
        if name == "inference_startup_phase_duration_seconds"
    }
    assert {"resolve", "cache_verify", "load", "warmup"} <= phases


def test_unknown_paths_share_one_metric_label(serve_cached):
    with serve_cached() as client:
        assert client.get("/wp-admin").status_code == 404
        assert client.get("/random-thing").status_code == 404
        samples = metric_samples(client.get("/metrics").text)
    assert (
        samples[
            (
                "inference_http_requests_total",
                (("method", "GET"), ("path", "other"), ("status", "404")),
            )
        ]
        == 2
    )


def test_one_log_line_per_request_without_bodies(serve_cached, caplog):
    secret = 0.123456789
    with serve_cached() as client, caplog.at_level(logging.INFO, logger="inference.access"):
        client.post(
            "/predict", json={"inputs": [[secret, 0, 0, 0]]}, headers={"x-request-id": "abc"}
        )
    lines = [r for r in caplog.records if r.name == "inference.access"]
    assert len(lines) == 1
    record = lines[0]
    assert (record.method, record.path, record.status, record.request_id) == (
        "POST",
        "/predict",
        200,
        "abc",
    )
    assert record.duration_ms >= 0
    assert str(secret) not in record.getMessage()
    assert all(str(secret) not in str(value) for value in vars(record).values())
