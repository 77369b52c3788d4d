"""Settings come only from the environment and are loud when wrong."""

from __future__ import annotations

import pytest

from inference.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in (
        "MODEL_POINTER",
        "MODEL_SSM_PARAMETER",
        "MODEL_POINTER_FILE",
        "INFERENCE_API_KEYS",
        "INFERENCE_API_KEYS_FILE",
        "PORT",
        "BATCHING",
        "MAX_BATCH_SIZE",
        "MODEL_CACHE_VERIFY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch):
    monkeypatch.setenv("MODEL_SSM_PARAMETER", "/models/iris/prod")
    settings = load_settings()
    assert settings.port == 8080
    assert settings.host == "0.0.0.0"
    assert settings.max_batch_size == 1024
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.batching is True
    assert settings.batch_max_wait_ms == 0
    assert settings.api_keys == ()
    assert settings.torch_num_threads >= 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "abc", "PORT: Input should be a valid integer"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("BATCHING", "maybe", "BATCHING: Input should be a valid boolean"),
        ("MAX_BATCH_SIZE", "0", "MAX_BATCH_SIZE: Input should be greater than or equal to 1"),
        ("MAX_BODY_BYTES", "-5", "MAX_BODY_BYTES: Input should be greater than or equal to 1024"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        (
            "SWITCH_INTERVAL_MS",
            "0",
            "SWITCH_INTERVAL_MS: Input should be greater than or equal to 0.05",
        ),
        (
            "MODEL_CACHE_VERIFY",
            "sometimes",
            "MODEL_CACHE_VERIFY: Input should be 'full', 'stamp' or 'off'",
        ),
    ],
)
def test_bad_values_are_named(monkeypatch, name, value, message):
    monkeypatch.setenv("MODEL_SSM_PARAMETER", "/models/iris/prod")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)


def test_a_model_source_is_required():
    with pytest.raises(
        ConfigError, match="set MODEL_POINTER, MODEL_SSM_PARAMETER or MODEL_POINTER_FILE"
    ):
        load_settings()


def test_empty_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("MODEL_POINTER", "")
    monkeypatch.setenv("MODEL_SSM_PARAMETER", "/p")
    monkeypatch.setenv("PORT", "")
    settings = load_settings()
    assert settings.model_pointer is None
    assert settings.port == 8080


def test_batching_switch(monkeypatch):
    monkeypatch.setenv("MODEL_SSM_PARAMETER", "/p")
    monkeypatch.setenv("BATCHING", "off")
    assert load_settings().batching is False


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "stamp"),
        ("stamp", "stamp"),
        ("full", "full"),
        ("FULL", "full"),
        ("off", "off"),
        # The variable used to be a boolean: "true" asked for a re-hash every time.
        ("true", "full"),
        ("yes", "full"),
        ("1", "full"),
        ("false", "off"),
        ("no", "off"),
        ("0", "off"),
    ],
)
def test_cache_verification_modes(monkeypatch, value, mode):
    monkeypatch.setenv("MODEL_SSM_PARAMETER", "/p")
    if value is not None:
        monkeypatch.setenv("MODEL_CACHE_VERIFY", value)
    assert load_settings().model_cache_verify == mode
