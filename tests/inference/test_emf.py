"""The service's own metrics as CloudWatch EMF lines, and its one JSON line per request.

Every line is checked against AWS's EMF specification (its JSON schema plus the
rules the schema does not express) and read back by the App Runner stand-in's
EMF parser, with the dimensions the dashboard queries.
"""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
import orjson
import pytest

from devstack.apprunner.observability import parse_emf
from inference.config import ConfigError, load_settings
from inference.emf import EmfMetrics, compress
from inference.jsonlog import JsonFormatter
from tests.inference.conftest import service_of

# The schema published with the specification ("Embedded metric format example and
# JSON schema", CloudWatch User Guide).
_NAME = {"type": "string", "pattern": "^(.*)$", "minLength": 1, "maxLength": 255}
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": _NAME,
                            "Dimensions": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "array",
                                    "minItems": 0,
                                    "maxItems": 9,
                                    "items": _NAME,
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": _NAME,
                                        "Unit": {
                                            "type": "string",
                                            "pattern": "^(Seconds|Microseconds|Milliseconds|Bytes"
                                            "|Kilobytes|Megabytes|Gigabytes|Terabytes|Bits"
                                            "|Kilobits|Megabits|Gigabits|Terabits|Percent|Count"
                                            "|Bytes\\/Second|Kilobytes\\/Second|Megabytes\\/Second"
                                            "|Gigabytes\\/Second|Terabytes\\/Second|Bits\\/Second"
                                            "|Kilobits\\/Second|Megabits\\/Second|Gigabits\\/Second"
                                            "|Terabits\\/Second|Count\\/Second|None)$",
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def assert_valid_emf(line: str) -> dict[str, Any]:
    """The line is one JSON object that is a valid EMF document; return it."""
    assert "\n" not in line
    document = orjson.loads(line)
    jsonschema.validate(document, EMF_SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        assert len(directive["Metrics"]) <= 100
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:  # a dimension target is a string member of the root
                assert isinstance(document[key], str) and document[key]
        for metric in directive["Metrics"]:
            value = document[metric["Name"]]  # a metric target: a number or <= 100 numbers
            numbers = value if isinstance(value, list) else [value]
            assert 1 <= len(numbers) <= 100
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers)
    return document


def emf_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = JsonFormatter()
    return [formatter.format(r) for r in caplog.records if r.name == "inference.emf"]


ROW = {"inputs": [[1, 2, 3, 4]]}
DIMS = (("Environment", "staging"), ("Model", "demo"), ("Version", "1.0"))


def test_a_request_gives_one_valid_emf_line(serve_cached, caplog) -> None:
    caplog.set_level(logging.INFO)
    with serve_cached(emf_flush_seconds=60, emf_dimensions="Environment=staging") as client:
        assert client.post("/predict", json=ROW).status_code == 200
        caplog.clear()  # leave the ModelLoadTime line of startup out
        service_of(client).emf.flush()
        [line] = emf_lines(caplog)
    document = assert_valid_emf(line)
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ModelDeck/Inference"
    assert directive["Dimensions"] == [
        ["Environment", "Model", "Version"],
        ["Environment", "Model"],
    ]
    assert (document["Predictions"], document["Errors"], document["ClientErrors"]) == (1, 0, 0)
    assert len(document["PredictionLatency"]) == 1 and document["PredictionLatency"][0] > 0
    assert document["BatchSize"] == [1]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {
        "Predictions": "Count",
        "Errors": "Count",
        "ClientErrors": "Count",
        "PredictionLatency": "Milliseconds",
        "BatchSize": "Count",
    }
    # What the stand-in turns into metrics, under the dimensions the dashboard queries.
    parsed = parse_emf(line)
    assert parsed is not None
    keys = {(ns, name, dims) for (ns, name, dims, _unit), _at, _value in parsed}
    assert ("ModelDeck/Inference", "Predictions", DIMS) in keys
    assert ("ModelDeck/Inference", "PredictionLatency", DIMS) in keys
    assert ("ModelDeck/Inference", "Predictions", DIMS[:2]) in keys


def test_model_load_time_once_at_ready(serve_cached, caplog) -> None:
    caplog.set_level(logging.INFO)
    with serve_cached(emf_namespace="Team/Models", emf_dimensions="Environment=prod,Team=ml"):
        pass
    loads = [assert_valid_emf(line) for line in emf_lines(caplog)]
    [load] = [d for d in loads if "ModelLoadTime" in d]
    assert load["ModelLoadTime"] > 0
    assert (load["Environment"], load["Team"], load["Version"]) == ("prod", "ml", "1.0")
    [directive] = load["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Team/Models"
    assert directive["Metrics"] == [{"Name": "ModelLoadTime", "Unit": "Seconds"}]


def test_errors_and_client_errors_are_counted_apart(serve_cached, caplog) -> None:
    caplog.set_level(logging.INFO)
    with serve_cached("probe", emf_flush_seconds=60) as client:
        assert client.post("/predict", json={"inputs": [[0, -1]]}).status_code == 500
        assert client.post("/predict", json={"inputs": [[0]]}).status_code == 422
        assert client.post("/predict", json={"inputs": [[0, 1], [0, 2]]}).status_code == 200
        assert client.get("/version").status_code == 200  # not a prediction: not counted
        document = service_of(client).emf.flush()
    assert document is not None
    assert (document["Predictions"], document["Errors"], document["ClientErrors"]) == (2, 1, 1)
    assert len(document["PredictionLatency"]) == 1  # successful predictions only


def test_nothing_written_while_idle_or_disabled(serve_cached, caplog) -> None:
    caplog.set_level(logging.INFO)
    with serve_cached(emf_flush_seconds=60) as client:
        assert service_of(client).emf.flush() is None
    caplog.clear()
    with serve_cached(emf_enabled=False) as client:
        client.post("/predict", json=ROW)
        assert service_of(client).emf.flush() is None
    assert emf_lines(caplog) == []


def test_many_requests_stay_within_100_values_per_metric() -> None:
    emf = EmfMetrics(namespace="N", dimensions={}, flush_seconds=60)
    emf.serving("demo", "1.0", 0.5)
    for i in range(1, 1001):
        emf.request(200, i / 1000, 2)  # 1 ms .. 1000 ms
        emf.batch(2)
    document = emf.flush()
    assert document is not None
    line = orjson.dumps(document).decode()
    assert_valid_emf(line)
    assert document["Predictions"] == 2000
    latencies = document["PredictionLatency"]
    assert len(latencies) == 100
    # Evenly spaced quantiles: the 0.5th, 1.5th, ... 99.5th percentiles.
    assert latencies[0] == 6.0 and latencies[49] == 496.0 and latencies[-1] == 996.0
    assert document["BatchSize"] == [2] * 100
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Model", "Version"],
        ["Model"],
    ]


def test_compress_keeps_short_lists() -> None:
    assert compress([3.0, 1.0, 2.0]) == [3.0, 1.0, 2.0]
    assert len(compress([float(v) for v in range(101)])) == 100


def test_requests_before_a_model_is_served_are_not_recorded() -> None:
    emf = EmfMetrics(namespace="N", dimensions={}, flush_seconds=60)
    emf.request(503, 0.001, 0)
    emf.serving("demo", "1.0", 0.5)
    assert emf.flush() is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EMF_DIMENSIONS", "Environment", "is not Name=value"),
        ("EMF_DIMENSIONS", "Version=3", "reserved"),
        ("EMF_DIMENSIONS", "A=1,A=2", "reserved or repeated"),
        ("EMF_DIMENSIONS", ",".join(f"D{i}=x" for i in range(8)), "at most 7 dimensions"),
        ("EMF_NAMESPACE", "AWS/AppRunner", "AWS/ is reserved"),
        ("EMF_FLUSH_SECONDS", "0", "greater than or equal to 0.1"),
    ],
)
def test_bad_emf_settings_stop_startup(monkeypatch, variable, value, message) -> None:
    monkeypatch.setenv("MODEL_POINTER_FILE", "/nonexistent/pointer.json")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


# --- The request line ------------------------------------------------------------------


def test_one_request_line_with_version_and_never_the_body(serve_cached, caplog) -> None:
    caplog.set_level(logging.INFO)
    marker = "do-not-log-this-7f3a"
    with serve_cached() as client:
        caplog.clear()
        answer = client.post(
            "/predict",
            json={"inputs": [[1, 2, 3, 4]], "note": marker},
            headers={"X-Request-ID": "req-42", "Authorization": f"Bearer {marker}"},
        )
    assert answer.status_code == 200
    formatter = JsonFormatter()
    lines = [orjson.loads(formatter.format(r)) for r in caplog.records]
    [request] = [line for line in lines if line.get("event") == "request"]
    assert {k: request[k] for k in ("method", "path", "status", "version", "request_id")} == {
        "method": "POST",
        "path": "/predict",
        "status": 200,
        "version": "1.0",
        "request_id": "req-42",
    }
    assert request["duration_ms"] > 0 and request["level"] == "INFO"
    assert not [line for line in lines if marker in orjson.dumps(line).decode()]
