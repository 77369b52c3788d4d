"""Tiny real models the tests serve, and helpers to save them the way users do."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class Affine(nn.Module):
    """y = x @ W.T + b with fixed weights, so expected outputs are computable in the test."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        with torch.no_grad():
            weight = torch.arange(features * classes, dtype=torch.float32)
            self.linear.weight.copy_(weight.reshape(classes, features) / 10)
            self.linear.bias.copy_(torch.arange(classes, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class Padded(Affine):
    """Affine plus a large unused buffer, so the artifact is a few MB (multi-part download)."""

    def __init__(self, padding_floats: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("padding", torch.rand(padding_floats, generator=generator))


class TupleOut(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.sum(dim=1), x * 2.0


class DictOut(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"sum": x.sum(dim=1), "double": x * 2.0}


class IntDouble(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 2


class BoolNot(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.logical_not(x)


class Probe(nn.Module):
    """Input [batch, 2]: column 0 sets how long the forward spins, a negative column 1 raises.

    The output is 2 * x, so each caller can check it got exactly its own rows back.
    """

    def forward(self, x: Tensor) -> Tensor:
        if bool((x[:, 1] < 0).any()):
            raise RuntimeError("negative input in column 1")
        steps = int(x[:, 0].max())
        acc = torch.zeros(128, 128)
        w = torch.full((128, 128), 1e-3)
        for _ in range(steps):
            acc = torch.tanh(acc @ w + w)
        return x * 2.0 + acc.sum() * 0.0


class ReturnsString(nn.Module):
    def forward(self, x: Tensor) -> str:
        return "not a tensor"


@dataclass(frozen=True)
class Artifact:
    """A saved model file and the facts a pointer states about it."""

    path: Path
    format: str
    shape: list[int]
    dtype: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def save_torchscript(module: nn.Module, path: Path, *, trace_with: Tensor | None = None) -> None:
    scripted: Any = (
        torch.jit.trace(module, trace_with) if trace_with is not None else torch.jit.script(module)
    )
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    path.write_bytes(buffer.getvalue())


def save_export(module: nn.Module, path: Path, example: Tensor) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes={"x": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def build_all(directory: Path) -> dict[str, Artifact]:
    """Save every test model into ``directory``; return them by name."""
    # torch 2.13 deprecates torch.jit.script/trace/save, but TorchScript is one of
    # the two artifact formats the contract promises to serve.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _build_all(directory)


def _build_all(directory: Path) -> dict[str, Artifact]:
    directory.mkdir(parents=True, exist_ok=True)
    built: dict[str, Artifact] = {}

    def ts(name: str, module: nn.Module, shape: list[int], dtype: str, trace: bool = False):
        path = directory / f"{name}.pt"
        example = torch.zeros(2, *shape) if trace else None
        save_torchscript(module.eval(), path, trace_with=example)
        built[name] = Artifact(path, "torchscript", shape, dtype)

    ts("affine", Affine(), [4], "float32")
    ts("affine_traced", Affine(), [4], "float32", trace=True)
    ts("affine64", Affine().double(), [4], "float64")
    ts("tuple", TupleOut(), [3], "float32", trace=True)
    ts("dict", DictOut(), [3], "float32")
    ts("int64", IntDouble(), [3], "int64")
    ts("int32", IntDouble(), [3], "int32")
    ts("bool", BoolNot(), [2], "bool")
    ts("probe", Probe(), [2], "float32")
    ts("padded", Padded(padding_floats=700_000), [4], "float32")  # ~2.8 MB
    ts("string_out", ReturnsString(), [4], "float32")
    export_path = directory / "affine.pt2"
    save_export(Affine(), export_path, torch.zeros(8, 4))
    built["affine_export"] = Artifact(export_path, "torch.export", [4], "float32")
    return built
