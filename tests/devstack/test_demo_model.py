"""The demo model: versions that load anywhere, really differ in quality, and build once."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from devstack.demo_model import (
    MODEL_NAME,
    DemoVersion,
    build_demo_versions,
    main,
    make_dataset,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FRESH_SEED = 20261124  # not a seed the build uses
FRESH_SIZE = 4000

# Runs with `python -I -S`: no site-packages processing (so no editable install
# of this project), no cwd, no PYTHONPATH. Only the directory holding torch and
# its dependencies is added, without running its .pth files.
LOADER = r"""
import importlib.util, json, sys
from pathlib import Path

site_packages, repo_root, request_file = sys.argv[1:4]
sys.path.append(site_packages)
project_packages = ("devstack", "dashboard", "inference", "tests")
for name in project_packages:
    assert importlib.util.find_spec(name) is None, f"{name} is importable"
assert repo_root not in sys.path and "" not in sys.path, sys.path

import torch

request = json.loads(Path(request_file).read_text())
inputs = torch.tensor(request["inputs"], dtype=torch.float32)
outputs = {}
for item in request["artifacts"]:
    if item["format"] == "torchscript":
        model = torch.jit.load(item["path"])
    else:
        model = torch.export.load(item["path"]).module()
    with torch.no_grad():
        batch = model(inputs)
        single = model(inputs[:1])
    outputs[item["version"]] = {"batch": batch.tolist(), "single": single.tolist()}

loaded = [name for name in sys.modules if name.split(".")[0] in project_packages]
assert not loaded, loaded
print(json.dumps(outputs))
"""


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def versions(build_dir: Path) -> list[DemoVersion]:
    return build_demo_versions(build_dir)


@pytest.fixture(scope="module")
def fresh_data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_dataset(FRESH_SIZE, FRESH_SEED)


@pytest.fixture(scope="module")
def outputs_without_project_code(
    versions: list[DemoVersion],
    fresh_data: tuple[torch.Tensor, torch.Tensor],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """Run every artifact in a separate interpreter that cannot import this project."""
    workdir = tmp_path_factory.mktemp("loader")
    request = {
        "inputs": fresh_data[0].tolist(),
        "artifacts": [
            {"version": v.version, "format": v.format, "path": str(v.path)} for v in versions
        ],
    }
    request_file = workdir / "request.json"
    request_file.write_text(json.dumps(request))
    site_packages = Path(torch.__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            LOADER,
            str(site_packages),
            str(REPO_ROOT),
            str(request_file),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    outputs: dict[str, dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return outputs


def test_versions_describe_their_artifacts(build_dir: Path, versions: list[DemoVersion]) -> None:
    assert MODEL_NAME == "iris"
    assert len(versions) >= 4
    assert [v.version for v in versions] == sorted(v.version for v in versions)
    assert len({v.version for v in versions}) == len(versions)
    formats = [v.format for v in versions]
    assert formats.count("torchscript") >= 3
    assert formats.count("torch.export") >= 1
    for v in versions:
        assert VERSION_RE.match(v.version)
        assert v.artifact == {"torchscript": "model.pt", "torch.export": "model.pt2"}[v.format]
        assert v.path == build_dir / v.version / v.artifact
        data = v.path.read_bytes()
        assert v.size == len(data)
        assert v.sha256 == hashlib.sha256(data).hexdigest()
        assert v.input_shape == [4]
        assert v.input_dtype == "float32"
        assert set(v.metrics) == {"accuracy", "loss"}
        assert v.notes


def test_artifacts_give_probabilities_without_project_code(
    versions: list[DemoVersion],
    outputs_without_project_code: dict[str, dict[str, Any]],
) -> None:
    assert set(outputs_without_project_code) == {v.version for v in versions}
    for version, out in outputs_without_project_code.items():
        for key, rows in (("batch", FRESH_SIZE), ("single", 1)):
            probs = torch.tensor(out[key])
            assert probs.shape == (rows, 3), (version, key)
            assert bool(((probs >= 0) & (probs <= 1)).all()), version
            assert torch.allclose(probs.sum(dim=1), torch.ones(rows), atol=1e-5), version


def accuracy(probs: list[list[float]], labels: torch.Tensor) -> float:
    return (torch.tensor(probs).argmax(dim=1) == labels).float().mean().item()


def test_newer_versions_are_really_better_on_fresh_data(
    versions: list[DemoVersion],
    fresh_data: tuple[torch.Tensor, torch.Tensor],
    outputs_without_project_code: dict[str, dict[str, Any]],
) -> None:
    labels = fresh_data[1]
    scripted = [v for v in versions if v.format == "torchscript"]
    measured = [
        accuracy(outputs_without_project_code[v.version]["batch"], labels) for v in scripted
    ]

    # A 0.05 margin is ~6 standard errors on 4000 examples.
    for older, newer in zip(measured, measured[1:], strict=False):
        assert newer >= older + 0.05, measured
    assert measured[0] < 0.8 and measured[-1] > 0.9, measured
    for v, acc in zip(scripted, measured, strict=True):
        assert v.metrics["accuracy"] == pytest.approx(acc, abs=0.03), v.version


def test_exported_version_matches_its_torchscript_twin(
    versions: list[DemoVersion],
    outputs_without_project_code: dict[str, dict[str, Any]],
) -> None:
    exported = next(v for v in versions if v.format == "torch.export")
    twin = next(v for v in versions if v.format == "torchscript" and v.metrics == exported.metrics)
    assert torch.allclose(
        torch.tensor(outputs_without_project_code[exported.version]["batch"]),
        torch.tensor(outputs_without_project_code[twin.version]["batch"]),
        atol=1e-6,
    )


def test_second_build_reuses_the_files(build_dir: Path, versions: list[DemoVersion]) -> None:
    before = {p: p.stat().st_mtime_ns for p in build_dir.rglob("*") if p.is_file()}

    again = build_demo_versions(build_dir)

    assert again == versions
    assert {p: p.stat().st_mtime_ns for p in build_dir.rglob("*") if p.is_file()} == before


def test_a_damaged_cache_is_rebuilt(
    build_dir: Path, versions: list[DemoVersion], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(build_dir, copy)
    damaged = copy / versions[0].version / versions[0].artifact
    damaged.write_bytes(b"not a model")

    rebuilt = build_demo_versions(copy)

    assert [v.version for v in rebuilt] == [v.version for v in versions]
    assert [v.metrics for v in rebuilt] == [v.metrics for v in versions]
    for v in rebuilt:
        assert v.path.parent.parent == copy
        assert hashlib.sha256(v.path.read_bytes()).hexdigest() == v.sha256


def test_cli_prints_a_table(
    build_dir: Path, versions: list[DemoVersion], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(build_dir)]) == 0
    out = capsys.readouterr().out
    for v in versions:
        assert v.version in out
        assert f"{v.metrics['accuracy']:.4f}" in out
