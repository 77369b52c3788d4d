"""Verification stamps: a restart trusts an unchanged, already verified cache entry.

What the service does is read from its log (``cache_hit`` says how the entry
was verified) and from the S3 requests it makes.
"""

from __future__ import annotations

import json
import logging
import os

from inference.bake import bake
from inference.cache import read_stamp
from tests.inference.conftest import pointer_for, seed_cache, serving


def cache_hits(caplog) -> list[str]:
    return [r.verified for r in caplog.records if getattr(r, "event", None) == "cache_hit"]


def verify_methods(caplog) -> list[str]:
    return [
        r.method
        for r in caplog.records
        if getattr(r, "event", None) == "startup_phase" and r.phase == "cache_verify"
    ]


def test_a_downloaded_entry_is_stamped_and_trusted_on_restart(
    aws, artifacts, make_settings, s3_requests, cache_dir, caplog
):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    with serving(make_settings(pointer)) as client:
        assert client.get("/readyz").status_code == 200
    entry = cache_dir / artifact.sha256
    assert read_stamp(entry).startswith(f"{artifact.sha256} {artifact.size} ")
    s3_requests.calls.clear()
    with caplog.at_level(logging.INFO), serving(make_settings(pointer)) as client:
        assert client.post("/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
    assert s3_requests.calls == []
    assert cache_hits(caplog) == ["stamp"]
    assert verify_methods(caplog) == ["stamp"]
    # The recency update moved the mtime; the stamp moved with it.
    assert read_stamp(entry).endswith(f" {entry.stat().st_mtime_ns}")


def test_an_entry_rewritten_after_stamping_is_hashed_and_replaced(
    aws, artifacts, make_settings, s3_requests, cache_dir, caplog
):
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    with serving(make_settings(pointer)):
        pass
    entry = cache_dir / artifact.sha256
    before = entry.stat()
    entry.write_bytes(bytes(b ^ 0xFF for b in artifact.data))  # same size, other bytes
    # An ordinary write moves the mtime; set it apart explicitly so that the test
    # does not depend on the clock ticking between the two writes.
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    s3_requests.calls.clear()
    with caplog.at_level(logging.INFO), serving(make_settings(pointer)) as client:
        assert client.get("/readyz").status_code == 200
    assert verify_methods(caplog) == ["sha256"]
    assert any(getattr(r, "event", None) == "cache_corrupt" for r in caplog.records)
    assert len(s3_requests.gets()) == 1
    assert entry.read_bytes() == artifact.data


def test_full_verification_rehashes_even_a_stamped_entry(
    aws, artifacts, make_settings, s3_requests, cache_dir, caplog
):
    """A change that keeps size and mtime fools the stamp; MODEL_CACHE_VERIFY=full is not fooled."""
    artifact = artifacts["affine"]
    pointer = aws.upload(artifact)
    with serving(make_settings(pointer)):
        pass
    entry = cache_dir / artifact.sha256
    before = entry.stat()
    damaged = bytearray(artifact.data)
    damaged[len(damaged) // 2] ^= 0x01
    entry.write_bytes(bytes(damaged))
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.INFO), serving(make_settings(pointer)):
        pass
    assert cache_hits(caplog) == ["stamp"]  # the documented blind spot
    caplog.clear()
    os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    s3_requests.calls.clear()
    with (
        caplog.at_level(logging.INFO),
        serving(make_settings(pointer, model_cache_verify="full")) as client,
    ):
        assert client.get("/readyz").status_code == 200
    assert verify_methods(caplog) == ["sha256"]
    assert len(s3_requests.gets()) == 1
    assert entry.read_bytes() == artifact.data


def test_an_unstamped_entry_is_hashed_once_then_stamped(
    artifacts, make_settings, cache_dir, caplog
):
    artifact = artifacts["affine"]
    seed_cache(cache_dir, artifact)
    pointer = pointer_for(artifact, key="models/demo/1.0/model.pt", s3_version_id="v")
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            with serving(make_settings(pointer)) as client:
                assert client.get("/readyz").status_code == 200
    assert cache_hits(caplog) == ["sha256", "stamp"]


def test_verification_off_trusts_the_size_alone(artifacts, make_settings, cache_dir, caplog):
    artifact = artifacts["affine"]
    seed_cache(cache_dir, artifact)
    pointer = pointer_for(artifact, key="models/demo/1.0/model.pt", s3_version_id="v")
    with caplog.at_level(logging.INFO), serving(make_settings(pointer, model_cache_verify="off")):
        pass
    assert cache_hits(caplog) == ["off"]
    assert verify_methods(caplog) == []
    assert read_stamp(cache_dir / artifact.sha256) is None


def test_bake_stamps_what_it_verified(artifacts, tmp_path):
    artifact = artifacts["affine"]
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.pt").write_bytes(artifact.data)
    pointer = pointer_for(artifact, key="models/demo/1.0/model.pt", s3_version_id="v")
    (source / "pointer.json").write_text(json.dumps(pointer))
    target = bake(source, tmp_path / "baked")
    assert read_stamp(target) == f"{artifact.sha256} {artifact.size} {target.stat().st_mtime_ns}"
