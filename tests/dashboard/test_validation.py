"""The validation gate: a model version is proven loadable, in a process of its
own, before anyone can promote it. Real artifacts in the embedded S3, real
worker processes; nothing of ours is patched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dashboard.aws import s3
from dashboard.aws.clients import reset_clients
from dashboard.aws.errors import AwsTransientError
from dashboard.registry import sandbox
from dashboard.registry.validation import ValidationResult, interpret_worker_exit, validate_version
from tests.conftest import free_port

BUCKET = "test-models"

# The formats under test are the contract's; torch's advice to move on is not news here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class Classifier(nn.Module):
    """Four features in, three class probabilities out (67 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)


CLASSIFIER_PARAMETERS = 4 * 8 + 8 + 8 * 3 + 3


class ChattyTwoHeads(nn.Module):
    """Prints to stdout (as a model may) and returns a dict of two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 2)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        print("noise on stdout from inside the model")
        vectors = self.embedding(tokens)
        return {"vectors": vectors, "mean": vectors.mean(dim=1)}


class Spinner(nn.Module):
    """Never returns: a loop on tensor ops, which (unlike Python) is serialised."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counter = torch.zeros(1)
        while bool(counter.sum() >= 0):
            counter = counter + 1
        return x


class Hog(nn.Module):
    """Allocates 1 GiB in its forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(268435456)
        return x + big.sum()


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int


def _artifact(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifact]:
    folder = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    made: dict[str, Artifact] = {}
    for name, module in {
        "classifier": Classifier(),
        "two_heads": ChattyTwoHeads(),
        "spinner": Spinner(),
        "hog": Hog(),
    }.items():
        path = folder / f"{name}.pt"
        torch.jit.save(torch.jit.script(module.eval()), str(path))
        made[name] = _artifact(path)
    exported = torch.export.export(Classifier().eval(), (torch.randn(1, 4),))
    torch.export.save(exported, str(folder / "classifier.pt2"))
    made["classifier_export"] = _artifact(folder / "classifier.pt2")
    (folder / "garbage.pt").write_bytes(os.urandom(4096))
    made["garbage"] = _artifact(folder / "garbage.pt")
    return made


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """The validation's download folder; every test checks it is left empty."""
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == []


def upload(artifact: Artifact, key: str = "models/iris/1.0/model.pt") -> str:
    version_id = s3.put_file(bucket=BUCKET, key=key, path=artifact.path)
    assert version_id
    return version_id


def validate(
    artifact: Artifact | None,
    work_dir: Path,
    *,
    key: str = "models/iris/1.0/model.pt",
    version_id: str | None = None,
    **overrides: Any,
) -> ValidationResult:
    arguments: dict[str, Any] = {
        "bucket": BUCKET,
        "key": key,
        "s3_version_id": version_id,
        "expected_sha256": artifact.sha256 if artifact else None,
        "expected_size": artifact.size if artifact else None,
        "format": "torchscript",
        "input_shape": [4],
        "input_dtype": "float32",
        "time_limit_seconds": 60,
        "memory_limit_mb": 1024,
        "work_dir": work_dir,
    }
    arguments.update(overrides)
    return validate_version(**arguments)


def test_good_torchscript_model_passes(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    good = artifacts["classifier"]
    version_id = upload(good)

    result = validate(good, work_dir, version_id=version_id)

    assert result.ok, result.error
    assert result.error == ""
    assert result.sha256 == good.sha256
    assert result.size == good.size
    assert result.parameter_count == CLASSIFIER_PARAMETERS
    assert result.output_shape == [1, 3]
    assert result.load_seconds is not None and result.load_seconds >= 0
    assert result.forward_ms is not None and result.forward_ms > 0
    assert result.to_dict()["output_shape"] == [1, 3]


def test_good_torch_export_model_passes(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    good = artifacts["classifier_export"]
    key = "models/iris/1.1/model.pt2"
    version_id = upload(good, key)

    result = validate(good, work_dir, key=key, version_id=version_id, format="torch.export")

    assert result.ok, result.error
    assert result.parameter_count == CLASSIFIER_PARAMETERS
    assert result.output_shape == [1, 3]


def test_dict_output_and_model_prints_on_stdout(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["two_heads"]
    upload(model)

    result = validate(model, work_dir, input_shape=[6], input_dtype="int64")

    assert result.ok, result.error
    assert result.output_shape == {"vectors": [1, 6, 2], "mean": [1, 2]}
    assert result.parameter_count == 20


def test_random_bytes_are_not_a_model(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    garbage = artifacts["garbage"]
    upload(garbage)

    result = validate(garbage, work_dir)

    assert not result.ok
    assert result.error == "not a TorchScript archive (it is not a zip archive)"
    assert "\n" not in result.error
    assert result.sha256 == garbage.sha256
    assert result.parameter_count is None


def test_torchscript_file_declared_as_torch_export_is_refused(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["classifier"]
    upload(model)

    result = validate(model, work_dir, format="torch.export")

    assert not result.ok
    assert result.error == "not a torch.export archive (it is a TorchScript archive)"
    # the cause torch only logs, not its generic "check the warnings above"
    assert "warnings above" not in result.error


def test_wrong_declared_input_shape_fails_in_forward(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["classifier"]
    upload(model)

    result = validate(model, work_dir, input_shape=[5])

    assert not result.ok
    assert result.error.startswith(
        "the model's forward failed on an example of shape [5] float32: "
    )
    assert "mat1 and mat2 shapes cannot be multiplied (1x5 and 4x8)" in result.error
    assert "\n" not in result.error
    # it did load: what was measured before the failure is kept
    assert result.parameter_count == CLASSIFIER_PARAMETERS
    assert result.forward_ms is None


def test_sha256_mismatch_is_refused_without_loading(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = artifacts["classifier"]
    upload(model)

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a mismatching artifact must never be loaded")

    monkeypatch.setattr(sandbox.subprocess, "Popen", no_process)
    result = validate(model, work_dir, expected_sha256="9c1b" + "0" * 60)

    assert not result.ok
    assert result.error == (
        f"SHA-256 mismatch: S3 object has {model.sha256}, the manifest says 9c1b{'0' * 60}"
    )
    assert result.sha256 == model.sha256
    assert result.load_seconds is None


def test_size_mismatch_is_refused_before_downloading(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["classifier"]
    upload(model)

    result = validate(model, work_dir, expected_size=model.size + 1)

    assert not result.ok
    assert result.error == (
        f"size mismatch: S3 object has {model.size} bytes, the manifest says {model.size + 1}"
    )
    assert result.sha256 is None  # nothing was downloaded


def test_the_pinned_object_version_is_the_one_validated(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    good = artifacts["classifier"]
    pinned = upload(good)
    upload(artifacts["garbage"])  # same key, newer version

    result = validate(good, work_dir, version_id=pinned)
    current = validate(good, work_dir, version_id=None, expected_size=None)

    assert result.ok, result.error
    assert result.sha256 == good.sha256
    assert not current.ok
    assert current.error.startswith("SHA-256 mismatch")


def test_missing_object_or_version(aws: str, work_dir: Path) -> None:
    missing_key = validate(None, work_dir, key="models/iris/9.9/model.pt")
    assert not missing_key.ok
    assert missing_key.error == (
        "no such object/version: s3://test-models/models/iris/9.9/model.pt does not exist"
    )
    assert missing_key.sha256 is None

    s3.put_json(bucket=BUCKET, key="models/iris/1.0/model.pt", document={})
    missing_version = validate(None, work_dir, version_id="3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY")
    assert not missing_version.ok
    assert missing_version.error.startswith("no such object/version: ")
    assert "3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY" in missing_version.error


def test_a_model_that_hangs_is_stopped_at_the_time_limit(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["spinner"]
    upload(model)

    result = validate(model, work_dir, time_limit_seconds=3)

    assert not result.ok
    assert result.error == "validation exceeded its time limit of 3 s"
    assert result.sha256 == model.sha256


def test_a_model_that_allocates_too_much_hits_the_memory_limit(
    aws: str, artifacts: dict[str, Artifact], work_dir: Path
) -> None:
    model = artifacts["hog"]
    upload(model)

    limited = validate(model, work_dir, memory_limit_mb=512)
    roomy = validate(model, work_dir, memory_limit_mb=2048)

    assert not limited.ok
    assert limited.error.startswith(
        "validation exceeded its memory limit of 512 MB while running the model's forward"
    )
    assert "1073741824 bytes" in limited.error
    assert roomy.ok, roomy.error  # the same model fits in 2 GB: the limit was the cause


def test_unreachable_s3_raises_a_transient_error_for_the_task_to_retry(
    moto_server: str, work_dir: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    settings.AWS_MAX_ATTEMPTS = 1
    reset_clients()
    try:
        with pytest.raises(AwsTransientError, match="GetObject"):
            validate(None, work_dir)
    finally:
        reset_clients()


def test_limits_torch_cannot_start_under_are_refused(work_dir: Path) -> None:
    with pytest.raises(ValueError, match="memory_limit_mb"):
        validate(None, work_dir, memory_limit_mb=128)
    with pytest.raises(ValueError, match="time_limit_seconds"):
        validate(None, work_dir, time_limit_seconds=0)


def test_the_worker_imports_neither_django_nor_the_dashboard(tmp_path: Path) -> None:
    probe = (
        "import runpy, sys; sys.argv = ['w', '{}']; "
        f"runpy.run_path({str(sandbox.WORKER_SCRIPT)!r}, run_name='not_main'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'dashboard', 'celery', 'boto3', 'torch', 'inference')))"
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


# How a sandbox that left no answer is explained (the cases no model can be
# relied on to produce: the kernel's OOM killer, a segfault in native code).


def explain(returncode: int, stderr: str = "", answer: bytes | None = b"") -> str:
    document = interpret_worker_exit(
        returncode=returncode,
        timed_out=False,
        answer=answer,
        stderr=stderr,
        time_limit_seconds=60,
        memory_limit_mb=2048,
    )
    assert document["ok"] is False
    return str(document["error"])


def test_death_by_sigkill_suggests_out_of_memory() -> None:
    assert explain(-9) == "the validation process died with signal 9 (SIGKILL; out of memory?)"


def test_death_by_another_signal_quotes_the_last_stderr_line() -> None:
    assert explain(-11, stderr="loading\nFatal Python error: Segmentation fault\n\n") == (
        "the validation process died with signal 11 (SIGSEGV): "
        "Fatal Python error: Segmentation fault"
    )


def test_death_by_cpu_time_limit() -> None:
    assert explain(-24) == "validation exceeded its CPU time limit of 60 s"


def test_death_by_bad_alloc_is_the_memory_limit() -> None:
    stderr = "terminate called after throwing an instance of 'std::bad_alloc'\n"
    assert explain(-6, stderr=stderr) == (
        "validation exceeded its memory limit of 2048 MB "
        "(the validation process died with signal 6 (SIGABRT))"
    )


def test_exit_without_result() -> None:
    assert explain(1, stderr="ImportError: no torch\n") == (
        "the validation process exited with status 1 without a result: ImportError: no torch"
    )


def test_an_answer_over_the_size_bound_is_refused() -> None:
    assert explain(0, answer=None) == (
        f"the validation process answered with more than {sandbox.MAX_ANSWER_BYTES} bytes"
    )
