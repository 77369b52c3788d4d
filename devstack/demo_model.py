"""The project's own demo model: an "iris-like" classifier trained on synthetic data.

Nothing is downloaded. A seeded generator draws 4-feature examples from three
overlapping Gaussian clusters (the best any classifier can do is about 0.95
accuracy), and small PyTorch networks are trained on them with different budgets
so that the versions differ measurably in quality:

    2026.11.1  torchscript   short training   ~0.72 accuracy
    2026.11.2  torchscript   longer training  ~0.84
    2026.11.3  torchscript   wider, long      ~0.95
    2026.11.4  torch.export  same weights as 2026.11.3, exported as ``.pt2``

Every artifact takes float32 input of shape ``[batch, 4]`` and returns class
probabilities of shape ``[batch, 3]``; it loads with ``torch.jit.load`` or
``torch.export.load`` alone, without this module on the path.

``python -m devstack.demo_model OUT_DIR`` builds (or reuses) the versions and
prints a table.
"""

# No `from __future__ import annotations`: TorchScript cannot resolve the
# string annotations it would turn the buffer declarations into.
import argparse
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

MODEL_NAME = "iris"
NUM_FEATURES = 4
NUM_CLASSES = 3
METADATA_FILE = "demo_versions.json"

# Per-class feature means loosely follow the real iris data set (sepal length,
# sepal width, petal length, petal width); the spread is widened so that the
# classes overlap and accuracy says something about the model.
_CLASS_MEANS = ((5.0, 3.4, 1.5, 0.25), (5.9, 2.8, 4.3, 1.3), (6.6, 3.0, 5.6, 2.0))
_FEATURE_STD = (0.52, 0.46, 0.63, 0.35)
_TRAIN_SEED = 1
_HELD_OUT_SEED = 2
_TRAIN_SIZE = 600
_HELD_OUT_SIZE = 5000
_LEARNING_RATE = 0.1


@dataclass(frozen=True)
class DemoVersion:
    """One built version of the demo model and what its manifest needs to say."""

    version: str
    path: Path
    artifact: str
    format: str
    sha256: str
    size: int
    input_shape: list[int]
    input_dtype: str
    metrics: dict[str, float]
    notes: str


@dataclass(frozen=True)
class _Recipe:
    version: str
    hidden: int
    steps: int
    format: str
    notes: str


# Oldest first. The torch.export version reuses the weights of the recipe with
# the same (hidden, steps): training is deterministic, so it is trained once.
_RECIPES = (
    _Recipe("2026.11.1", 8, 30, "torchscript", "8 hidden units, 30 SGD steps: undertrained"),
    _Recipe("2026.11.2", 8, 60, "torchscript", "8 hidden units, 60 SGD steps"),
    _Recipe("2026.11.3", 16, 400, "torchscript", "16 hidden units, 400 SGD steps"),
    _Recipe("2026.11.4", 16, 400, "torch.export", "2026.11.3's weights exported with torch.export"),
)
_ARTIFACT_NAMES = {"torchscript": "model.pt", "torch.export": "model.pt2"}


class IrisClassifier(nn.Module):
    """Standardises the 4 features, one hidden ReLU layer, softmax over 3 classes."""

    mean: Tensor
    std: Tensor

    def __init__(self, hidden: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.hidden = nn.Linear(NUM_FEATURES, hidden)
        self.out = nn.Linear(hidden, NUM_CLASSES)

    def logits(self, x: Tensor) -> Tensor:
        """Return unnormalised class scores, shape [batch, 3]."""
        z = (x - self.mean) / self.std
        return self.out(torch.relu(self.hidden(z)))

    def forward(self, x: Tensor) -> Tensor:
        """Return class probabilities, shape [batch, 3]; each row sums to 1."""
        return torch.softmax(self.logits(x), dim=-1)


def make_dataset(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Return ``(features float32 [n, 4], labels int64 [n])`` drawn with ``seed``.

    The same ``(n, seed)`` always gives the same data; a different seed gives a
    fresh sample from the same distribution.
    """
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor(_CLASS_MEANS, dtype=torch.float32)
    std = torch.tensor(_FEATURE_STD, dtype=torch.float32)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    noise = torch.randn(n, NUM_FEATURES, generator=generator, dtype=torch.float32)
    return means[labels] + noise * std, labels


def build_demo_versions(out_dir: Path) -> list[DemoVersion]:
    """Build the demo versions into ``out_dir/<version>/<artifact>``, oldest first.

    When ``out_dir`` already holds a build made by this same code (and torch
    version) whose files still match their recorded SHA-256, it is returned
    as is and nothing is trained or rewritten.
    """
    out_dir = Path(out_dir)
    code_version = _code_version()
    cached = _load_cached(out_dir, code_version)
    if cached is not None:
        logger.info("Reusing the demo model versions in %s", out_dir)
        return cached

    logger.info("Training the demo model versions into %s", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_dataset(_TRAIN_SIZE, _TRAIN_SEED)
    x_held_out, y_held_out = make_dataset(_HELD_OUT_SIZE, _HELD_OUT_SEED)
    trained: dict[tuple[int, int], IrisClassifier] = {}
    versions: list[DemoVersion] = []
    for recipe in _RECIPES:
        key = (recipe.hidden, recipe.steps)
        if key not in trained:
            trained[key] = _train(x_train, y_train, hidden=recipe.hidden, steps=recipe.steps)
        model = trained[key]
        path = out_dir / recipe.version / _ARTIFACT_NAMES[recipe.format]
        _save(model, path, recipe.format)
        data = path.read_bytes()
        versions.append(
            DemoVersion(
                version=recipe.version,
                path=path,
                artifact=path.name,
                format=recipe.format,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                input_shape=[NUM_FEATURES],
                input_dtype="float32",
                metrics=_evaluate(model, x_held_out, y_held_out),
                notes=recipe.notes,
            )
        )
    _write_metadata(out_dir, code_version, versions)
    return versions


def _code_version() -> str:
    # Any edit to this file or a torch upgrade may change the artifacts, so
    # either one invalidates a cached build.
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()


def _train(x: Tensor, y: Tensor, *, hidden: int, steps: int) -> IrisClassifier:
    previous_threads = torch.get_num_threads()
    # One thread keeps float reductions in a fixed order, so the weights and
    # metrics repeat exactly; fork_rng leaves the caller's random state alone.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = IrisClassifier(hidden, x.mean(dim=0), x.std(dim=0))
            optimizer = torch.optim.SGD(model.parameters(), lr=_LEARNING_RATE)
            for _ in range(steps):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model.logits(x), y)
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(previous_threads)
    # Frozen weights let consumers call .numpy() on outputs without torch.no_grad().
    model.requires_grad_(False)
    return model.eval()


@torch.no_grad()
def _evaluate(model: IrisClassifier, x: Tensor, y: Tensor) -> dict[str, float]:
    logits = model.logits(x)
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    loss = nn.functional.cross_entropy(logits, y).item()
    return {"accuracy": round(accuracy, 4), "loss": round(loss, 4)}


def _save(model: IrisClassifier, path: Path, fmt: str) -> None:
    # Serialising to memory keeps the archive's inner folder name ("archive")
    # independent of the file name, so the bytes do not depend on where they go.
    buffer = io.BytesIO()
    if fmt == "torchscript":
        # torch 2.10+ deprecates TorchScript, but it is a format the contract promises.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
            torch.jit.save(torch.jit.script(model), buffer)
    elif fmt == "torch.export":
        example = (torch.zeros(8, NUM_FEATURES),)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        program = torch.export.export(model, example, dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, buffer)
    else:  # pragma: no cover - the recipes above are the only callers
        raise ValueError(f"unknown artifact format {fmt!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(buffer.getvalue())
    # Rename last so a crash never leaves a half-written artifact under the real name.
    os.replace(tmp, path)


def _write_metadata(out_dir: Path, code_version: str, versions: list[DemoVersion]) -> None:
    entries = []
    for v in versions:
        entry = asdict(v)
        entry["path"] = v.path.relative_to(out_dir).as_posix()
        entries.append(entry)
    document = {"schema": 1, "code_version": code_version, "versions": entries}
    tmp = out_dir / f".{METADATA_FILE}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, out_dir / METADATA_FILE)


def _load_cached(out_dir: Path, code_version: str) -> list[DemoVersion] | None:
    """Return the recorded build if it is current and intact, else None."""
    try:
        document: Any = json.loads((out_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("code_version") != code_version:
        return None
    try:
        versions = [
            DemoVersion(**{**entry, "path": out_dir / entry["path"]})
            for entry in document["versions"]
        ]
    except (KeyError, TypeError):
        return None
    for v in versions:
        try:
            data = v.path.read_bytes()
        except OSError:
            return None
        if len(data) != v.size or hashlib.sha256(data).hexdigest() != v.sha256:
            return None
    return versions


def _print_table(versions: list[DemoVersion]) -> None:
    header = ("version", "format", "artifact", "accuracy", "loss", "size", "sha256", "notes")
    rows = [
        (
            v.version,
            v.format,
            v.artifact,
            f"{v.metrics['accuracy']:.4f}",
            f"{v.metrics['loss']:.4f}",
            str(v.size),
            v.sha256[:12],
            v.notes,
        )
        for v in versions
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the demo versions in OUT_DIR and print them; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo_model", description="Build the demo model versions."
    )
    parser.add_argument("out_dir", type=Path, help="directory for the artifacts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    versions = build_demo_versions(args.out_dir)
    print(f"model {MODEL_NAME!r}, artifacts under {args.out_dir}")
    _print_table(versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
