"""Optional API keys: /predict needs a bearer key, checked before readiness; probes stay open."""

from __future__ import annotations

import pytest

from inference.config import ConfigError, load_settings
from tests.inference.conftest import serving

ROW = {"inputs": [[1, 2, 3, 4]]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_from_the_environment_variable(serve_cached):
    with serve_cached(inference_api_keys=" alpha , beta,,") as client:
        missing = client.post("/predict", json=ROW)
        wrong = client.post("/predict", json=ROW, headers=bearer("gamma"))
        wrong_scheme = client.post("/predict", json=ROW, headers={"Authorization": "Token alpha"})
        alpha = client.post("/predict", json=ROW, headers=bearer("alpha"))
        beta = client.post("/predict", json=ROW, headers={"authorization": "bearer  beta "})
        probes = [
            client.get(path).status_code for path in ("/healthz", "/readyz", "/version", "/metrics")
        ]
    for response in (missing, wrong, wrong_scheme):
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"
    assert alpha.status_code == 200
    assert beta.status_code == 200
    assert probes == [200, 200, 200, 200]


def test_keys_from_a_file_with_commas_and_newlines(serve_cached, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("  first-key\n\nsecond-key , third-key\r\n")
    with serve_cached(inference_api_keys_file=keys) as client:
        results = [
            client.post("/predict", json=ROW, headers=bearer(key)).status_code
            for key in ("first-key", "second-key", "third-key", "fourth-key", "first")
        ]
    assert results == [200, 200, 200, 401, 401]


def test_env_and_file_keys_combine(serve_cached, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("from-file\n")
    with serve_cached(inference_api_keys="from-env", inference_api_keys_file=keys) as client:
        assert client.post("/predict", json=ROW, headers=bearer("from-env")).status_code == 200
        assert client.post("/predict", json=ROW, headers=bearer("from-file")).status_code == 200


def test_no_keys_means_open(serve_cached):
    with serve_cached() as client:
        assert client.post("/predict", json=ROW).status_code == 200


def test_authentication_comes_before_readiness(make_settings, artifacts):
    pointer = {
        "schema": 1,
        "model": "demo",
        "version": "1.0",
        "bucket": "bkt",
        "key": "k",
        "s3_version_id": "v",
        "sha256": "a" * 64,
        "size": 10,
        "format": "onnx",
        "input": {"shape": [4], "dtype": "float32"},
    }
    with serving(make_settings(pointer, inference_api_keys="k1")) as client:
        anonymous = client.post("/predict", json=ROW)
        authenticated = client.post("/predict", json=ROW, headers=bearer("k1"))
    assert anonymous.status_code == 401
    assert authenticated.status_code == 503
    assert authenticated.json()["status"] == "failed"


def test_empty_key_file_refuses_to_start(tmp_path, monkeypatch):
    empty = tmp_path / "keys"
    empty.write_text(" \n , \n")
    monkeypatch.setenv("MODEL_POINTER", "{}")
    monkeypatch.setenv("INFERENCE_API_KEYS_FILE", str(empty))
    with pytest.raises(ConfigError, match="contains no keys"):
        load_settings()


def test_missing_key_file_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_POINTER", "{}")
    monkeypatch.setenv("INFERENCE_API_KEYS_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="INFERENCE_API_KEYS_FILE .* is unreadable"):
        load_settings()
