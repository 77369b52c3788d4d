"""Load one model artifact and run it once, inside the validation sandbox.

Started by :mod:`dashboard.registry.sandbox` as
``python -I -B <this file> '<json arguments>'``, inside bubblewrap (or the
validation container), after prlimit has set its rlimits. It is a standalone
script on purpose: importing the ``dashboard`` package would import Celery and
Django, which this process must not pay for nor hold. It imports only the
standard library, pyseccomp, the torch-free archive checks
(``inference/artifact_safety.py``, loaded from the path it is given) and torch.

Arguments (one JSON object): ``artifact_fd`` (the verified file, open
read-only), ``answer_fd`` (a pipe for the one answer), ``format``
(``torchscript`` or ``torch.export``), ``input_shape`` (one example, no batch
dimension), ``input_dtype``, ``memory_limit_mb``, ``safety_module`` (path),
``seccomp`` (the policy's worker rules) and ``checks`` (false only in tests
that prove the sandbox holds without the checks).

In order: it forbids itself new programs, processes and sockets (seccomp);
imports torch; refuses archives that need pickle or call refused operators
(before loading); loads; lists every operator of every graph and refuses
file, process and network operators (before running); forbids itself every
file system call; runs the model; and writes exactly one JSON object to the
answer pipe::

    {"ok": bool, "kind": "ok|arguments|unsafe|load|forward|output|memory|
     file_system|internal", "error": "", "load_seconds": float|null,
     "forward_ms": float|null, "parameter_count": int|null,
     "output_shape": list|dict|null, "operators": [str]|null}

The caller trusts none of it: it parses the answer strictly and bounds it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import statistics
import sys
import time
from typing import Any

FORMATS = ("torchscript", "torch.export")
DTYPES = ("float32", "float64", "int64", "int32", "bool")
FORMAT_LABELS = {"torchscript": "TorchScript", "torch.export": "torch.export"}
LOADER_NAMES = {"torchscript": "torch.jit.load", "torch.export": "torch.export.load"}
TIMED_RUNS = 5
MAX_OUTPUTS = 256
MAX_OUTPUT_DEPTH = 4
MAX_OPERATORS = 1000
# Output names become JSON keys the inference service answers with: the same
# rule as version names (CONTRACT.md section 1).
OUTPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_MAX_REASON_CHARS = 400
_OOM_MARKERS = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc")
_MINIZ_BOILERPLATE = ". This is an internal miniz error"
CLONE_THREAD = 0x00010000
# System calls that touch the file system by name; refused once the model is loaded.
_FILE_CALLS = (
    "open", "openat", "openat2", "creat", "mkdir", "mkdirat", "mknod", "mknodat", "link",
    "linkat", "symlink", "symlinkat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
    "rmdir", "truncate", "chmod", "fchmodat", "chown", "lchown", "fchownat",
    "inotify_add_watch", "memfd_create",
)  # fmt: skip


class Refused(Exception):
    """A fault found by the worker itself: ``kind`` and a reason for a person."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _wrote_to_tmp() -> bool:
    """Whether any file exists in the sandbox's own /tmp. It starts empty and is
    the only place the sandbox could write (torch itself leaves only an empty
    torchinductor cache folder); a checkout under /tmp is bound read-only on
    top of it from another file system, so entries whose device is not the
    tmpfs's are what the sandbox was given, not what the model wrote."""
    tmpfs = os.stat("/tmp").st_dev
    for root, dirs, files in os.walk("/tmp"):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == tmpfs]
        if any(os.lstat(os.path.join(root, f)).st_dev == tmpfs for f in files):
            return True
    return False


def main(argv: list[str]) -> int:
    """Run one validation; always exits 0 after writing its answer, unless it dies."""
    try:
        args = json.loads(argv[1])
        answer_fd = int(args["answer_fd"])
    except (IndexError, KeyError, TypeError, ValueError):
        return 2
    # Anything the model or torch prints goes to stderr (the parent keeps a tail).
    os.dup2(2, 1)
    try:
        result = validate(args)
    except Refused as exc:
        result = _failure(exc.kind, exc.reason)
    except BaseException as exc:  # the answer must be written whatever happened
        if _is_out_of_memory(exc):
            result = _failure(
                "memory",
                f"validation exceeded its memory limit of {args.get('memory_limit_mb')} MB "
                f"({_reason(exc)})",
            )
        else:
            result = _failure("internal", f"the validation process failed: {_reason(exc)}")
    _emit(answer_fd, result)
    return 0


def validate(args: dict[str, Any]) -> dict[str, Any]:
    """Return the answer for the artifact on ``args["artifact_fd"]``."""
    fmt = str(args.get("format"))
    dtype = str(args.get("input_dtype"))
    shape = args.get("input_shape")
    memory_limit_mb = int(args["memory_limit_mb"])
    artifact_fd = int(args["artifact_fd"])
    checks = args.get("checks", True) is not False
    rules = args.get("seccomp") or {}
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

    seccomp = _seccomp()
    safety = _load_module("artifact_safety", str(args["safety_module"]))
    _forbid_processes(seccomp, rules)

    import torch  # under the rlimits: torch's import is part of what is limited

    if fmt == "torch.export":
        import torch.export  # noqa: F401  (lazy imports happen now, not under the file lock)
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

    if checks:
        try:
            with os.fdopen(os.dup(artifact_fd), "rb") as archive:
                archive.seek(0)  # dup()ed descriptors share one offset
                if fmt == "torch.export":
                    safety.check_pt2(archive)
                else:
                    safety.check_torchscript(archive)
        except safety.UnsafeArtifact as exc:
            return failed("unsafe", exc.reason)
        except ValueError as exc:  # NotAnArchive
            return failed("load", f"not a {FORMAT_LABELS[fmt]} archive ({exc})")

    logged = _LoggedException("torch.export")
    started = time.perf_counter()
    try:
        with logged:
            module, operators = _load(torch, safety, artifact_fd, fmt)
    except Exception as exc:
        # torch.export.load logs the real cause, then raises a generic error.
        cause = logged.exception or exc
        if _is_out_of_memory(cause):
            return out_of_memory(cause, "loading the model")
        return failed(
            "load", f"not a {FORMAT_LABELS[fmt]} archive ({LOADER_NAMES[fmt]}: {_reason(cause)})"
        )
    result["load_seconds"] = round(time.perf_counter() - started, 4)
    result["operators"] = sorted(operators)[:MAX_OPERATORS]
    result["parameter_count"] = _parameter_count(module)
    if args.get("private_tmp") and _wrote_to_tmp():
        return failed(
            "file_system", "the model touched the file system: it wrote files while loading"
        )
    if checks:
        try:
            if fmt == "torch.export":
                safety.refuse_exported_operators(operators)
            else:
                safety.refuse_operators(operators)
        except safety.UnsafeArtifact as exc:
            return failed("unsafe", exc.reason)
    if fmt == "torch.export":
        try:
            module = module.module()
        except Exception as exc:
            return failed("load", f"not a torch.export archive (.module(): {_reason(exc)})")

    described = f"{shape} {dtype}"
    try:
        example = _example(torch, shape, dtype)
    except Exception as exc:
        if _is_out_of_memory(exc):
            return out_of_memory(exc, f"building an example of shape {described}")
        return failed(
            "arguments", f"could not build an example of shape {described}: {_reason(exc)}"
        )
    marker = int(rules.get("file_lock_errno", 129))
    _forbid_files(seccomp, marker)
    try:
        with torch.inference_mode():
            output = module(example)  # warm-up: lazy initialisation, allocator
            timings = []
            for _ in range(TIMED_RUNS):
                tick = time.perf_counter()
                module(example)
                timings.append((time.perf_counter() - tick) * 1000.0)
    except Exception as exc:
        if _touched_files(exc, marker):
            return failed(
                "file_system",
                "the model touched the file system: it tried to open a file while running",
            )
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
        result["output_shape"] = _describe(torch, output, depth=0, count=[0])
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


def _load(torch: Any, safety: Any, fd: int, fmt: str) -> tuple[Any, set[str]]:
    """Load without running the model; return it and every operator its graphs call."""
    if fmt == "torchscript":
        # torch.jit.load's own steps, keeping the compilation unit: it holds every
        # function of the archive (all methods of all modules and classes).
        unit = torch._C.CompilationUnit()
        # A path lets torch read the archive in place (a file object is copied
        # into memory whole); /proc/self/fd reopens the verified file.
        cpp_module = torch._C.import_ir_module(
            unit, f"/proc/self/fd/{fd}", torch.device("cpu"), {}, False
        )
        module = torch.jit._recursive.wrap_cpp_module(cpp_module)
        module.eval()
        return module, safety.scripted_operators(torch, unit)
    with os.fdopen(os.dup(fd), "rb") as archive:
        archive.seek(0)  # dup()ed descriptors share one offset
        program = torch.export.load(archive)
    return program, safety.exported_operators(program)


def _load_module(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise Refused("internal", f"the archive checks at {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _seccomp() -> Any:
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:
        raise Refused(
            "internal", f"the sandbox's seccomp filter cannot be installed ({exc})"
        ) from exc
    return pyseccomp


def _forbid_processes(seccomp: Any, rules: dict[str, Any]) -> None:
    """No new programs, no processes (threads only), no sockets, from here on."""
    import errno

    program = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in rules.get("worker_deny", ()):
        _rule(seccomp, program, errno.EPERM, name)
    # fork() is clone() without CLONE_THREAD; clone3's flags sit in memory a
    # filter cannot read, so it answers ENOSYS and glibc falls back to clone().
    program.add_rule(
        seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0)
    )
    _rule(seccomp, program, errno.ENOSYS, "clone3")
    program.load()


def _forbid_files(seccomp: Any, marker: int) -> None:
    """Every call that names a file fails with ``marker`` (a model that reads
    or writes a file is caught by it)."""
    program = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in _FILE_CALLS:
        _rule(seccomp, program, marker, name)
    program.load()


def _rule(seccomp: Any, program: Any, error: int, name: str) -> None:
    try:
        program.add_rule(seccomp.ERRNO(error), name)
    except (RuntimeError, ValueError, OSError):
        pass  # not a system call on this architecture: nothing can call it


def _touched_files(exc: BaseException, marker: int) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == marker:
            return True
        if os.strerror(marker) in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        try:
            return int(sum(t.numel() for t in module.state_dict.values()))
        except Exception:
            return 0


def _describe(torch: Any, output: Any, *, depth: int, count: list[int]) -> Any:
    """Return the shape of a tensor, or a list/dict of shapes for tuple/list/dict outputs.

    Raises TypeError for anything else, for names the service cannot answer
    with, and past :data:`MAX_OUTPUTS` entries or :data:`MAX_OUTPUT_DEPTH` levels.
    """
    count[0] += 1
    if count[0] > MAX_OUTPUTS:
        raise TypeError(f"it returned more than {MAX_OUTPUTS} outputs")
    if isinstance(output, torch.Tensor):
        return [int(d) for d in output.shape]
    if depth >= MAX_OUTPUT_DEPTH:
        raise TypeError(f"its outputs are nested more than {MAX_OUTPUT_DEPTH} levels deep")
    if isinstance(output, tuple | list):
        return [_describe(torch, item, depth=depth + 1, count=count) for item in output]
    if isinstance(output, dict):
        described = {}
        for key, value in output.items():
            if not isinstance(key, str) or OUTPUT_NAME.fullmatch(key) is None:
                # The name itself is not repeated: it may carry anything.
                raise TypeError(
                    "an output name is not allowed (names are 1-64 letters, digits, '.', '_' "
                    "or '-', starting with a letter or digit)"
                )
            described[key] = _describe(torch, value, depth=depth + 1, count=count)
        return described
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
        "operators": None,
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


def _emit(fd: int, result: dict[str, Any]) -> None:
    data = json.dumps(result, allow_nan=False).encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
