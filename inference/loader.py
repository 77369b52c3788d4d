"""Load a verified artifact into a callable module and prove it runs.

Neither format's public loader in torch 2.13 can memory-map: ``torch.jit.load``
and ``torch.export.load`` both read the archive's tensors into memory (only
``torch.load`` of plain state dicts has ``mmap=True``). The cache file is
therefore not needed once loading returns.

The loaders read one record at a time and do their CPU work (allocating and
filling each tensor) in between, so on a cold page cache the disk idles while
they work and they wait while it reads. A thread streams the file into the page
cache ahead of them meanwhile (``sendfile`` to ``/dev/null``: read, never
copied), which keeps the disk busy for the whole load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.artifact_safety import (
    UnsafeArtifact,
    check_pt2,
    check_torchscript,
    exported_operators,
    refuse_exported_operators,
    refuse_operators,
    scripted_operators,
)
from inference.errors import StartupFailure
from inference.outputs import UnsupportedOutput, encode_whole
from inference.pointer import InputSpec
from inference.validation import NUMPY_DTYPES

logger = logging.getLogger(__name__)

_READ_AHEAD_CHUNK = 8 * 1024 * 1024


def load_module(path: Path, fmt: str) -> Any:
    """Return the model in ``path`` ready for inference (eval mode where supported).

    Raises StartupFailure(``unloadable_artifact``) with the loader's own reason, or
    (``unsafe_artifact``) for an archive that needs pickle or native code, or whose
    graphs call file, process or network operators (inference/artifact_safety.py).
    """
    if not zipfile.is_zipfile(path):
        raise StartupFailure(
            "unloadable_artifact",
            f"the {fmt} artifact is not a zip archive (both torchscript and torch.export "
            "files are), so it is not a saved model",
        )
    if fmt not in ("torchscript", "torch.export"):
        raise StartupFailure("unsupported_format", f"unsupported artifact format {fmt!r}")
    try:
        # Before anything loads it: loading a .pt2 that asks for pickle runs the
        # file's code, and TorchScript runs __setstate__ methods while loading.
        if fmt == "torch.export":
            check_pt2(str(path))
        else:
            check_torchscript(str(path))
    except UnsafeArtifact as exc:
        raise StartupFailure("unsafe_artifact", f"the {fmt} artifact is refused: {exc}") from exc
    except ValueError as exc:
        raise StartupFailure(
            "unloadable_artifact", f"the artifact does not load as {fmt}: {exc}"
        ) from exc
    try:
        with _quiet_torch_export_logger(), _read_ahead(path):
            if fmt == "torchscript":
                with warnings.catch_warnings():
                    # torch 2.13 deprecates TorchScript in favour of torch.export, but
                    # serving it is part of the contract; the warning helps nobody here.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    # torch.jit.load's own steps, keeping the compilation unit that
                    # holds every function of the archive, for the operator scan.
                    unit = torch._C.CompilationUnit()
                    cpp_module = torch._C.import_ir_module(  # type: ignore[call-arg]
                        unit, str(path), torch.device("cpu"), {}, False
                    )
                    module = torch.jit._recursive.wrap_cpp_module(cpp_module)
                operators = scripted_operators(torch, unit)
                refuse = refuse_operators
            else:
                program = torch.export.load(str(path))
                operators = exported_operators(program)
                refuse = refuse_exported_operators
    except Exception as exc:
        raise StartupFailure(
            "unloadable_artifact", f"the artifact does not load as {fmt}: {_first_line(exc)}"
        ) from exc
    try:
        # Before it runs: no file, process or network operators.
        refuse(operators)
    except UnsafeArtifact as exc:
        raise StartupFailure("unsafe_artifact", f"the {fmt} artifact is refused: {exc}") from exc
    if fmt == "torchscript":
        module.eval()
        return module
    try:
        # .module() gives an nn.Module whose eval() torch refuses; the exported
        # graph already fixes train/eval behaviour at export time.
        return program.module()
    except Exception as exc:
        raise StartupFailure(
            "unloadable_artifact", f"the artifact does not load as {fmt}: {_first_line(exc)}"
        ) from exc


def warm_up(module: Any, spec: InputSpec) -> None:
    """Run one forward on a zero example of the declared input and encode its output.

    This makes the first real request fast (lazy initialisation, allocator) and
    proves, before the instance reports ready, that the model accepts its declared
    input and returns something the service can serve. Raises StartupFailure
    (``warmup_failed``) otherwise.
    """
    example = torch.from_numpy(np.zeros((1, *spec.shape), dtype=NUMPY_DTYPES[spec.dtype]))
    try:
        with torch.inference_mode():
            output = module(example)
        encode_whole(output)
    except UnsupportedOutput as exc:
        raise StartupFailure("warmup_failed", f"warm-up forward: {exc}") from exc
    except Exception as exc:
        raise StartupFailure(
            "warmup_failed",
            f"warm-up forward on a zero example of shape {[1, *spec.shape]} {spec.dtype} "
            f"failed: {_first_line(exc)}",
        ) from exc


def forward_error_summary(exc: BaseException) -> str:
    """Return the one line of a forward's exception that says what went wrong."""
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    # TorchScript errors carry the script traceback first and the reason last.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines and "TorchScript" in str(exc) else (lines[0] if lines else "")
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


@contextlib.contextmanager
def _read_ahead(path: Path) -> Iterator[None]:
    """Stream ``path`` into the page cache on a thread while the block runs."""
    done = threading.Event()

    def stream() -> None:
        try:
            with open(path, "rb") as src, open(os.devnull, "wb") as sink:
                size = os.fstat(src.fileno()).st_size
                offset = 0
                while offset < size and not done.is_set():
                    sent = os.sendfile(sink.fileno(), src.fileno(), offset, _READ_AHEAD_CHUNK)
                    if sent <= 0:
                        return
                    offset += sent
        except OSError as exc:  # only an optimisation; the loader reports real problems
            logger.debug("read-ahead stopped: %s", exc, extra={"event": "read_ahead_failed"})

    thread = threading.Thread(target=stream, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def _quiet_torch_export_logger() -> Iterator[None]:
    # torch.export.load logs a multi-line traceback at WARNING before raising on a
    # bad archive; the failure is reported once, by the caller, in one line.
    export_logger = logging.getLogger("torch.export")
    previous = export_logger.level
    export_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        export_logger.setLevel(previous)
