"""tools/first_pointer.py prints the pointer the dashboard itself would write
(CONTRACT.md section 2), read from S3 (the embedded AWS), or says why not."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import publish
from tools.first_pointer import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--bucket", "test-models", "--promoted-by", "alice", "--reason", "first"])
    out, err = capsys.readouterr()
    return code, out, err


def test_it_prints_the_pointer_the_dashboard_would_write(
    aws: str, db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dashboard.deployments.pointer import pointer_build
    from dashboard.registry.selectors import version_get

    publish("iris", "1.0", tmp_path)
    code, out, err = run(capsys, "iris", "1.0")
    assert (code, err) == (0, "")
    printed = json.loads(out)
    info = version_get(model="iris", version="1.0")
    assert info is not None
    now = dt.datetime.fromisoformat(printed["promoted_at"].replace("Z", "+00:00"))
    expected = pointer_build(
        info=info, bucket="test-models", promoted_by="alice", reason="first", now=now
    )
    assert printed == expected


def test_it_refuses_what_it_cannot_pin(
    aws: str, db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "iris", "9.9")
    assert code == 1 and "manifest.json does not exist: upload the version" in err
    code, _, err = run(capsys, "Iris", "1.0")
    assert code == 1 and "'Iris' is not a model name" in err
    code, _, err = run(capsys, "iris", "../1.0")
    assert code == 1 and "is not a version name" in err

    publish("iris", "2.0", tmp_path)
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    key = "models/iris/2.0/manifest.json"
    manifest = json.loads(s3.get_object(Bucket="test-models", Key=key)["Body"].read())
    s3.put_object(Bucket="test-models", Key=key, Body=json.dumps({**manifest, "size": 1}))
    code, _, err = run(capsys, "iris", "2.0")
    assert code == 1 and "the manifest says 1: upload the version again" in err
    s3.put_object(Bucket="test-models", Key=key, Body=b"{not json")
    code, _, err = run(capsys, "iris", "2.0")
    assert code == 1 and "is not JSON" in err
    s3.put_object(Bucket="test-models", Key=key, Body=json.dumps({"artifact": "model.pt"}))
    code, _, err = run(capsys, "iris", "2.0")
    assert code == 1 and "the manifest lacks format, sha256, size, input" in err
