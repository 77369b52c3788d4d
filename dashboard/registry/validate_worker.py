"""Load one model artifact and run it once, in a process of its own.

Started by :mod:`dashboard.registry.validation` as
``python -I <this file> '<json arguments>'``; it is a standalone script on
purpose: importing the ``dashboard`` package would import Celery and Django
(``dashboard/__init__.py`` loads the Celery app), which this process must not
pay for nor share. It imports only the standard library and, after its memory
limit is in place, torch.

Arguments (one JSON object): ``path``, ``format`` (``torchscript`` or
``torch.export``), ``input_shape`` (one example, no batch dimension),
``input_dtype``, ``memory_limit_mb``.

It writes exactly one JSON line to the stdout it was started with::

    {"ok": bool, "kind": "ok|arguments|load|forward|output|memory|internal",
     "error": "", "load_seconds": float|null, "forward_ms": float|null,
     "parameter_count": int|null, "output_shape": list|dict|null}

Anything the model or torch prints (TorchScript ``print``, C++ warnings) is
sent to stderr instead, so that line is the only thing on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import sys
import time
from typing import Any

FORMATS = ("torchscript", "torch.export")
DTYPES = ("float32", "float64", "int64", "int32", "bool")
FORMAT_LABELS = {"torchscript": "TorchScript", "torch.export": "torch.export"}
LOADER_NAMES = {"torchscript": "torch.jit.load", "torch.export": "torch.export.load"}
TIMED_RUNS = 5
_MAX_REASON_CHARS = 400
_OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc")
# Boilerplate torch appends to every archive-reading error; it adds no cause.
_MINIZ_BOILERPLATE = ". This is an internal miniz error"


def main(argv: list[str]) -> int:
    """Run one validation; always exits 0 after writing its JSON line, unless it dies."""
    result_fd = _claim_stdout()
    try:
        args = json.loads(argv[1])
        memory_limit_mb = int(args["memory_limit_mb"])
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        _emit(result_fd, _failure("arguments", f"bad arguments for the validation process: {exc}"))
        return 0
    _limit_resources(memory_limit_mb)
    try:
        result = validate(
            path=str(args["path"]),
            fmt=str(args["format"]),
            shape=args["input_shape"],
            dtype=str(args["input_dtype"]),
            memory_limit_mb=memory_limit_mb,
        )
    except BaseException as exc:  # the one line must be written whatever happened
        if _is_out_of_memory(exc):
            result = _failure(
                "memory",
                f"validation exceeded its memory limit of {memory_limit_mb} MB ({_reason(exc)})",
            )
        else:
            result = _failure("internal", f"the validation process failed: {_reason(exc)}")
    _emit(result_fd, result)
    return 0


def validate(
    *, path: str, fmt: str, shape: Any, dtype: str, memory_limit_mb: int
) -> dict[str, Any]:
    """Return the result document for the artifact at ``path`` (never raises for model faults)."""
    if fmt not in FORMATS:
        return _failure("arguments", f"unsupported artifact format {fmt!r}")
    if dtype not in DTYPES:
        return _failure("arguments", f"unsupported input dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        return _failure("arguments", f"input shape must be a list of positive integers: {shape!r}")

    import torch  # after the memory limit: torch's import is part of what is limited

    torch.set_num_threads(1)
    torch.manual_seed(0)
    result: dict[str, Any] = _failure("internal", "")

    def failed(kind: str, error: str) -> dict[str, Any]:
        # Keep what was measured before the failure (load time, parameter count).
        return {**result, "ok": False, "kind": kind, "error": error}

    def out_of_memory(exc: BaseException, doing: str) -> dict[str, Any]:
        return failed(
            "memory",
            f"validation exceeded its memory limit of {memory_limit_mb} MB while {doing} "
            f"({_reason(exc)})",
        )

    logged = _LoggedException("torch.export")
    started = time.perf_counter()
    try:
        with logged:
            module = _load(torch, path, fmt)
    except Exception as exc:
        # torch.export.load logs the real cause, then raises a generic error.
        cause = logged.exception or exc
        if _is_out_of_memory(cause):
            return out_of_memory(cause, "loading the model")
        return failed(
            "load", f"not a {FORMAT_LABELS[fmt]} archive ({LOADER_NAMES[fmt]}: {_reason(cause)})"
        )
    result["load_seconds"] = round(time.perf_counter() - started, 4)
    result["parameter_count"] = _parameter_count(module)

    described = f"{shape} {dtype}"
    try:
        example = _example(torch, shape, dtype)
    except Exception as exc:
        if _is_out_of_memory(exc):
            return out_of_memory(exc, f"building an example of shape {described}")
        return failed(
            "arguments", f"could not build an example of shape {described}: {_reason(exc)}"
        )
    try:
        with torch.inference_mode():
            output = module(example)  # warm-up: lazy initialisation, allocator
            timings = []
            for _ in range(TIMED_RUNS):
                tick = time.perf_counter()
                module(example)
                timings.append((time.perf_counter() - tick) * 1000.0)
    except Exception as exc:
        if _is_out_of_memory(exc):
            return out_of_memory(
                exc, f"running the model's forward on an example of shape {described}"
            )
        return failed(
            "forward",
            f"the model's forward failed on an example of shape {described}: {_reason(exc)}",
        )
    result["forward_ms"] = round(statistics.median(timings), 4)

    try:
        result["output_shape"] = _describe(torch, output)
    except TypeError as exc:
        return failed("output", f"the model's output cannot be served: {exc}")
    unbatched = _unbatched(torch, output)
    if unbatched is not None:
        return failed(
            "output",
            f"the model's output cannot be served: for a batch of 1 example it returned "
            f"a tensor of shape {unbatched}, which has no batch dimension of 1",
        )
    result.update(ok=True, kind="ok", error="")
    return result


def _load(torch: Any, path: str, fmt: str) -> Any:
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location="cpu")
        module.eval()
        return module
    # The exported program's module refuses eval(); train/eval behaviour was fixed
    # when it was exported.
    return torch.export.load(path).module()


class _LoggedException(logging.Handler):
    """Remember the last exception a logger reported while the block ran."""

    def __init__(self, logger_name: str) -> None:
        super().__init__(level=logging.WARNING)
        self.logger = logging.getLogger(logger_name)
        self.exception: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.exception = record.exc_info[1]

    def __enter__(self) -> _LoggedException:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self)


def _example(torch: Any, shape: list[int], dtype: str) -> Any:
    size = (1, *shape)
    torch_dtype = getattr(torch, dtype)
    if dtype in ("float32", "float64"):
        return torch.randn(size, dtype=torch_dtype)
    # Zero is a valid index for every embedding and the one safe integer to guess.
    return torch.zeros(size, dtype=torch_dtype)


def _parameter_count(module: Any) -> int:
    try:
        return int(sum(p.numel() for p in module.parameters()))
    except Exception:
        return 0


def _describe(torch: Any, output: Any) -> Any:
    """Return the shape of a tensor, or a list/dict of shapes for tuple/list/dict outputs.

    Raises TypeError for anything else (the inference service cannot serve it).
    """
    if isinstance(output, torch.Tensor):
        return list(output.shape)
    if isinstance(output, tuple | list):
        return [_describe(torch, item) for item in output]
    if isinstance(output, dict):
        return {str(key): _describe(torch, value) for key, value in output.items()}
    raise TypeError(
        f"it returned a {type(output).__name__}, not a tensor or a tuple, list or dict of tensors"
    )


def _unbatched(torch: Any, output: Any) -> list[int] | None:
    """Return the shape of the first output tensor whose first dimension is not 1, if any."""
    if isinstance(output, torch.Tensor):
        return None if output.dim() >= 1 and output.shape[0] == 1 else list(output.shape)
    items = output.values() if isinstance(output, dict) else output
    for item in items:
        found = _unbatched(torch, item)
        if found is not None:
            return found
    return None


def _failure(kind: str, error: str) -> dict[str, Any]:
    return {
        "ok": False,
        "kind": kind,
        "error": error,
        "load_seconds": None,
        "forward_ms": None,
        "parameter_count": None,
        "output_shape": None,
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in _OOM_MARKERS)


def _reason(exc: BaseException) -> str:
    """Return the one line of ``exc`` that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # TorchScript errors carry the script's traceback first and the reason last.
    reason = lines[-1] if "TorchScript" in lines[0] or "Traceback" in lines[0] else lines[0]
    reason = reason.split(_MINIZ_BOILERPLATE, 1)[0]
    if reason.startswith("[enforce fail at") and ". " in reason:
        # c10's "[enforce fail at alloc_cpu.cpp:127] err == 0. <the reason>"
        reason = reason.split(". ", 1)[1]
    for prefix in ("RuntimeError: ", "Error: "):
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    return reason


def _limit_resources(memory_limit_mb: int) -> None:
    # RLIMIT_DATA counts private writable memory (heap, anonymous mmaps, thread
    # stacks), which is what a model's tensors use; RLIMIT_AS would also count the
    # ~400 MB of shared libraries torch maps, making the limit hard to read.
    limit = memory_limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        # An unprivileged process cannot raise its hard limit; a lower one inherited
        # from the dashboard's own environment stays in force.
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _claim_stdout() -> int:
    """Keep the real stdout for the result line; point fd 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    return result_fd


def _emit(fd: int, result: dict[str, Any]) -> None:
    data = (json.dumps(result, allow_nan=False) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
