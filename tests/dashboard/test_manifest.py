import datetime as dt

import pytest

from dashboard.registry.manifest import Manifest, ManifestError

GOOD = {
    "schema": 1,
    "model": "iris",
    "version": "2026-11-24.1",
    "artifact": "model.pt",
    "format": "torchscript",
    "sha256": "a" * 64,
    "size": 123456,
    "input": {"shape": [4], "dtype": "float32"},
    "created_at": "2026-11-24T03:00:00Z",
    "created_by": "alice",
    "notes": "",
    "metrics": {"accuracy": 0.97},
}


def test_round_trip() -> None:
    manifest = Manifest.from_dict(GOOD)
    assert manifest.created_at == dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)
    assert manifest.to_dict() == GOOD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 2}, "schema"),
        ({"model": "Bad Name"}, "model"),
        ({"version": "../x"}, "version"),
        ({"format": "onnx"}, "format"),
        ({"sha256": "xyz"}, "sha256"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"input": {"shape": [], "dtype": "float32"}}, "input.shape"),
        ({"input": {"shape": [0], "dtype": "float32"}}, "input.shape"),
        ({"input": {"shape": [4], "dtype": "float16"}}, "input.dtype"),
        ({"input": "x"}, "input"),
        ({"artifact": "../model.pt"}, "artifact"),
        ({"artifact": "manifest.json"}, "artifact"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"metrics": {"accuracy": "high"}}, "metrics"),
    ],
)
def test_rejects_what_breaks_the_contract(change: dict, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict({**GOOD, **change})
    assert message in str(info.value)


def test_rejects_non_object() -> None:
    with pytest.raises(ManifestError):
        Manifest.from_dict([GOOD])
