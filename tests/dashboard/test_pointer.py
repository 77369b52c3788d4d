"""The pointer read back from SSM is checked like the names it stands for:
junk written to the parameter by anyone never reaches a page or a deployment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.aws import ssm
from dashboard.deployments.pointer import (
    PointerInvalid,
    pointer_build,
    pointer_dumps,
    pointer_loads,
    pointer_parse,
)
from dashboard.registry.selectors import version_get
from tests.conftest import publish
from tests.dashboard.factories import make_environment

GOOD: dict[str, Any] = {
    "schema": 1,
    "model": "iris",
    "version": "2026-11-24.1",
    "bucket": "modeldeck-models",
    "key": "models/iris/2026-11-24.1/model.pt",
    "s3_version_id": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
    "sha256": "a" * 64,
    "size": 123456,
    "format": "torchscript",
    "input": {"shape": [4], "dtype": "float32"},
    "promoted_by": "alice",
    "promoted_at": "2026-11-24T03:10:00Z",
    "reason": "better accuracy",
}

XSS = "x');alert(document.domain);//"


def test_a_contract_pointer_parses_to_itself() -> None:
    assert pointer_parse(json.dumps(GOOD)) == GOOD
    assert pointer_loads(json.dumps(GOOD), model="iris") == GOOD


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": XSS}, "version is not a valid version name"),
        ({"version": "1.0\n"}, "version is not a valid version name"),
        ({"model": "<b>iris</b>"}, "model is not a valid model name"),
        ({"schema": 2}, "schema must be 1"),
        ({"bucket": "Bucket With Spaces"}, "not an S3 bucket name"),
        ({"key": "models/iris/other/model.pt"}, "not under models/<model>/<version>/"),
        ({"key": "models/iris/2026-11-24.1/../../x.pt"}, "not under models/<model>/<version>/"),
        ({"key": "models/iris/2026-11-24.1/<script>"}, "does not name an artifact file"),
        ({"s3_version_id": 'v1" onmouseover="x'}, "not an S3 version id"),
        ({"s3_version_id": ""}, "not an S3 version id"),
        ({"sha256": "A" * 64}, "sha256 must be 64 lowercase"),
        ({"size": True}, "size must be a non-negative integer"),
        ({"size": -1}, "size must be a non-negative integer"),
        ({"format": "pickle"}, "format must be one of"),
        ({"input": {"shape": ["4"], "dtype": "float32"}}, "input.shape"),
        ({"input": {"shape": [4], "dtype": "object"}}, "input.dtype"),
        ({"promoted_at": "yesterday"}, "promoted_at must be an ISO 8601"),
    ],
)
def test_junk_fields_are_refused_by_name(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(PointerInvalid, match=re.escape(reason)) as info:
        pointer_parse(json.dumps({**GOOD, **change}))
    # the message names the field, never repeats what was in it
    for value in change.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(info.value)
    assert pointer_loads(json.dumps({**GOOD, **change})) is None


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"a string"', "null"])
def test_a_pointer_that_is_not_an_object_is_refused(raw: str) -> None:
    with pytest.raises(PointerInvalid):
        pointer_parse(raw)


def test_a_pointer_for_another_model_is_refused() -> None:
    with pytest.raises(PointerInvalid, match="another model"):
        pointer_parse(json.dumps(GOOD), model="fraud")


def test_free_text_is_neutralised_and_unknown_fields_dropped() -> None:
    raw = {
        **GOOD,
        "promoted_by": "mallory\x1b[31m\u202e",
        "reason": "fix\x00" + "r" * 2000,
        "extra": "<script>alert(1)</script>",
    }
    parsed = pointer_parse(json.dumps(raw))
    assert parsed["promoted_by"] == "mallory[31m"
    assert parsed["reason"] == ("fix" + "r" * 2000)[:500]
    assert "extra" not in parsed


def test_what_the_dashboard_writes_is_what_it_reads(aws: str, db: Any, tmp_path: Path) -> None:
    publish("iris", "1.0", tmp_path)
    info = version_get(model="iris", version="1.0")
    assert info is not None
    pointer = pointer_build(
        info=info, bucket="test-models", promoted_by="t", reason="r", now=timezone.now()
    )
    assert pointer_parse(pointer_dumps(pointer), model="iris") == pointer


def test_a_junk_pointer_in_ssm_is_reported_never_shown(
    aws: str, personas: Any, tmp_path: Path
) -> None:
    publish("iris", "1.0", tmp_path)
    make_environment("iris", "staging")
    ssm.put_parameter(
        name="/models/iris/staging",
        value=json.dumps({**GOOD, "version": f"<img src=x onerror=alert(1)>{XSS}"}),
    )
    client = Client()
    client.force_login(personas["deployer"])
    html = client.get("/models/iris/").content.decode()
    assert "the pointer in SSM breaks the contract" in html
    assert "alert(" not in html and "onerror" not in html
    api = client.get("/api/models/iris/environments")
    assert api.status_code == 200
    assert "alert(" not in api.content.decode()


def test_an_incomplete_pointer_names_what_it_lacks() -> None:
    # A pointer written by hand with only the version (found by QA): the message
    # says what is missing, not that the bucket has a bad name.
    hand = {"schema": 1, "model": "iris", "version": "2026.11.1"}
    with pytest.raises(PointerInvalid) as info:
        pointer_parse(json.dumps(hand))
    assert str(info.value) == (
        "the pointer lacks bucket, key, s3_version_id, sha256, size, format, input"
    )
    optional = {k: v for k, v in GOOD.items() if k not in {"promoted_by", "promoted_at", "reason"}}
    assert pointer_parse(json.dumps(optional))["version"] == GOOD["version"]
