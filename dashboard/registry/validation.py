"""The validation gate: prove that a model version in S3 loads and runs.

:func:`validate_version` downloads the pinned object version, checks its size
and SHA-256 against what was declared, then loads it and runs one forward pass
in a separate process (:mod:`dashboard.registry.validate_worker`) with a
wall-clock limit and a memory limit, so a model that crashes, hangs or eats all
memory takes down only that process, never the Celery worker calling this.

Memory limit: the worker sets ``RLIMIT_DATA`` (private writable memory: heap,
anonymous mappings, thread stacks) on itself before importing torch. Measured
on the reference machine (torch 2.13 CPU, Linux 6.18, one torch thread):
``import torch`` plus a tiny TorchScript model needs about 225 MB of it, a
torch.export model about 295 MB (``torch.export`` imports sympy and friends).
``RLIMIT_AS`` was rejected: torch maps ~400 MB of shared libraries and reserves
address space up front, so the same runs need an AS limit of 650 / 700 MB and
the number says little about the model. Limits below
:data:`MIN_MEMORY_LIMIT_MB` are refused because torch itself would not start.

Time limit: it covers the whole worker process, including starting Python and
importing torch (about 1.5 s here, 2.5 s for torch.export).

The worker runs with a minimal environment (no AWS credentials, no Django
settings or secrets): it needs none of them, and the artifact is untrusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsError, AwsNotFoundError, AwsTransientError, translate
from dashboard.registry.manifest import DTYPES, FORMATS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("validate_worker.py")
MIN_MEMORY_LIMIT_MB = 512
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
# Environment variables the worker inherits; everything else (credentials,
# Django settings, secrets) stays in the dashboard's processes.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")
_STDOUT_KEEP_BYTES = 1024 * 1024
_STDERR_KEEP_BYTES = 16 * 1024
_MAX_STDERR_LINE = 300
_OOM_MARKERS = (
    "can't allocate memory",
    "cannot allocate memory",
    "std::bad_alloc",
    "memoryerror",
    "out of memory",
)

OutputShape = list[Any] | dict[str, Any]


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of one validation. ``error`` is "" when ``ok``, else one sentence."""

    ok: bool
    error: str
    sha256: str | None  # what the bytes really hash to (None if not downloaded)
    size: int | None
    load_seconds: float | None
    forward_ms: float | None  # median of a few batch-1 forward passes
    parameter_count: int | None
    output_shape: OutputShape | None  # [1, 3]; a list/dict of shapes for tuple/dict outputs
    s3_version_id: str | None = None  # the S3 object version that was read

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict (the dataclass's field names)."""
        return dataclasses.asdict(self)


def validate_version(
    *,
    bucket: str,
    key: str,
    s3_version_id: str | None,
    expected_sha256: str | None,
    expected_size: int | None,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    time_limit_seconds: float = 120,
    memory_limit_mb: int = 4096,
    work_dir: Path | None = None,
) -> ValidationResult:
    """Download ``s3://bucket/key`` (version ``s3_version_id`` when given), verify it
    and prove it loads and runs on one example of ``input_shape``/``input_dtype``.

    Returns a result for every fault of the object or the model (missing, wrong
    size or hash, not loadable, forward fails, too slow, too big, crashes). Raises
    :class:`AwsTransientError` only when S3 could not be read for a reason worth
    retrying (throttling, 5xx, connection lost mid-download), and ValueError for
    limits this function cannot honour. The downloaded file is always deleted.
    """
    if time_limit_seconds <= 0:
        raise ValueError("time_limit_seconds must be positive")
    if memory_limit_mb < MIN_MEMORY_LIMIT_MB:
        raise ValueError(
            f"memory_limit_mb must be at least {MIN_MEMORY_LIMIT_MB}: torch alone needs ~300 MB"
        )
    location = f"s3://{bucket}/{key}" + (f" (version {s3_version_id})" if s3_version_id else "")
    if format not in FORMATS:
        return _failed(f"unsupported artifact format {format!r} (expected one of {FORMATS})")
    if input_dtype not in DTYPES:
        return _failed(f"unsupported input dtype {input_dtype!r} (expected one of {DTYPES})")

    directory = work_dir if work_dir is not None else Path(tempfile.gettempdir())
    suffix = ".pt2" if format == "torch.export" else ".pt"
    try:
        handle, name = tempfile.mkstemp(prefix="modeldeck-validate-", suffix=suffix, dir=directory)
    except OSError as exc:
        return _failed(
            f"the dashboard could not create a file for the download in {directory}: {exc}"
        )
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as sink:
            downloaded = _download(
                bucket=bucket,
                key=key,
                version_id=s3_version_id,
                expected_size=expected_size,
                location=location,
                sink=sink,
            )
        if isinstance(downloaded, ValidationResult):
            return downloaded
        sha256, size, read_version = downloaded
        if expected_size is not None and size != expected_size:
            return _failed(
                f"size mismatch: S3 object has {size} bytes, the manifest says {expected_size}",
                sha256=sha256,
                size=size,
            )
        if expected_sha256 is not None and sha256 != expected_sha256.lower():
            return _failed(
                f"SHA-256 mismatch: S3 object has {sha256}, the manifest says {expected_sha256}",
                sha256=sha256,
                size=size,
            )
        outcome = _run_worker(
            path=path,
            format=format,
            input_shape=input_shape,
            input_dtype=input_dtype,
            time_limit_seconds=time_limit_seconds,
            memory_limit_mb=memory_limit_mb,
        )
        result = ValidationResult(
            ok=bool(outcome.get("ok")) and outcome.get("kind") == "ok",
            error="" if outcome.get("kind") == "ok" else str(outcome.get("error") or "unknown"),
            sha256=sha256,
            size=size,
            load_seconds=_number(outcome.get("load_seconds")),
            forward_ms=_number(outcome.get("forward_ms")),
            parameter_count=_integer(outcome.get("parameter_count")),
            output_shape=_shape(outcome.get("output_shape")),
            s3_version_id=read_version or s3_version_id,
        )
    finally:
        path.unlink(missing_ok=True)
    if result.ok:
        logger.info("validated %s: loads in %.2f s", location, result.load_seconds or 0.0)
    else:
        logger.info("validation of %s failed: %s", location, result.error)
    return result


def _failed(error: str, *, sha256: str | None = None, size: int | None = None) -> ValidationResult:
    return ValidationResult(
        ok=False,
        error=error,
        sha256=sha256,
        size=size,
        load_seconds=None,
        forward_ms=None,
        parameter_count=None,
        output_shape=None,
    )


def _s3() -> S3Client:
    return cast("S3Client", client("s3"))


def _download(
    *,
    bucket: str,
    key: str,
    version_id: str | None,
    expected_size: int | None,
    location: str,
    sink: IO[bytes],
) -> tuple[str, int, str | None] | ValidationResult:
    """Stream the object into ``sink``, hashing as it arrives.

    Returns (sha256 hex, size), or a failed result when the object is missing,
    unreadable, or announces a size other than ``expected_size`` (then nothing
    is downloaded).
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        response = _s3().get_object(**kwargs)
    except Exception as exc:
        error = translate(exc, operation="GetObject")
        if isinstance(error, AwsNotFoundError) or _names_missing_version(error, version_id):
            return _failed(f"no such object/version: {location} does not exist")
        if error.transient:
            raise error from exc
        return _failed(f"could not download {location}: {error}")

    body = response["Body"]
    try:
        announced = int(response.get("ContentLength", -1))
        if expected_size is not None and announced >= 0 and announced != expected_size:
            return _failed(
                f"size mismatch: S3 object has {announced} bytes, the manifest says "
                f"{expected_size}",
                size=announced,
            )
        digest = hashlib.sha256()
        size = 0
        while True:
            try:
                chunk = body.read(DOWNLOAD_CHUNK_BYTES)
            except (BotoCoreError, Urllib3HTTPError, OSError) as exc:
                # The object exists and the first bytes came: a broken stream is transient.
                raise AwsTransientError(
                    f"GetObject failed while reading {location}: {exc}", operation="GetObject"
                ) from exc
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            try:
                sink.write(chunk)
            except OSError as exc:
                return _failed(f"the dashboard could not store the download of {location}: {exc}")
    finally:
        body.close()
    version = response.get("VersionId")
    return digest.hexdigest(), size, (version if version and version != "null" else None)


def _names_missing_version(error: AwsError, version_id: str | None) -> bool:
    # S3 answers a malformed version id with 400 InvalidArgument, and a version
    # id that names a delete marker with 405 MethodNotAllowed.
    return bool(version_id) and error.code in {"InvalidArgument", "MethodNotAllowed"}


class _Tail(threading.Thread):
    """Drain a pipe, keeping only its last ``keep`` bytes (a chatty model cannot fill memory)."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep = keep
        self.data = bytearray()

    def run(self) -> None:
        fd = self.stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self.data += chunk
                if len(self.data) > self.keep:
                    del self.data[: -self.keep]
        except OSError:
            pass
        finally:
            self.stream.close()

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


def _run_worker(
    *,
    path: Path,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    time_limit_seconds: float,
    memory_limit_mb: int,
) -> dict[str, Any]:
    """Run the worker on ``path``; return its result document (or one describing its death)."""
    arguments = json.dumps(
        {
            "path": str(path),
            "format": format,
            "input_shape": input_shape,
            "input_dtype": input_dtype,
            "memory_limit_mb": memory_limit_mb,
        }
    )
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    # One thread: predictable memory and no stampede on the worker's CPUs.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # -I: no PYTHONPATH, no user site, no script directory on sys.path (the
    # registry folder has a selectors.py that would shadow the standard library's).
    process = subprocess.Popen(
        [sys.executable, "-I", str(WORKER_SCRIPT), arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=path.parent,
        env=env,
        start_new_session=True,  # its own process group, killed as a whole on expiry
    )
    assert process.stdout is not None and process.stderr is not None
    stdout = _Tail(process.stdout, _STDOUT_KEEP_BYTES)
    stderr = _Tail(process.stderr, _STDERR_KEEP_BYTES)
    stdout.start()
    stderr.start()
    timed_out = False
    try:
        process.wait(timeout=time_limit_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Also reached when the caller is interrupted (e.g. Celery's soft time limit).
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        stdout.join(timeout=5)
        stderr.join(timeout=5)
    document = interpret_worker_exit(
        returncode=process.returncode,
        timed_out=timed_out,
        stdout=stdout.text(),
        stderr=stderr.text(),
        time_limit_seconds=time_limit_seconds,
        memory_limit_mb=memory_limit_mb,
    )
    if document.get("kind") == "died" and not timed_out:
        logger.warning(
            "validation process %s left no result (exit %s); its stderr ended with:\n%s",
            process.pid,
            process.returncode,
            stderr.text()[-4000:],
        )
    return document


def interpret_worker_exit(
    *,
    returncode: int,
    timed_out: bool,
    stdout: str,
    stderr: str,
    time_limit_seconds: float,
    memory_limit_mb: int,
) -> dict[str, Any]:
    """Return the worker's result document, or one whose ``error`` explains why there is none."""
    if timed_out:
        return _death(f"validation exceeded its time limit of {time_limit_seconds:g} s")
    for line in reversed(stdout.splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "kind" in document:
            return document
    last_line = _last_line(stderr)
    detail = f": {last_line}" if last_line else ""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        death = f"the validation process died with signal {number} ({name})"
        if number == signal.SIGKILL:
            death = f"the validation process died with signal {number} (SIGKILL; out of memory?)"
    else:
        death = f"the validation process exited with status {returncode} without a result"
    if any(marker in stderr.lower() for marker in _OOM_MARKERS):
        return _death(f"validation exceeded its memory limit of {memory_limit_mb} MB ({death})")
    return _death(death + detail)


def _death(error: str) -> dict[str, Any]:
    return {"ok": False, "kind": "died", "error": error}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= _MAX_STDERR_LINE else line[: _MAX_STDERR_LINE - 1] + "…"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shape(value: Any) -> OutputShape | None:
    return value if isinstance(value, list | dict) else None


def hash_version(*, bucket: str, key: str, s3_version_id: str | None) -> ValidationResult:
    """Stream an object through SHA-256 without keeping it (for artifacts that
    arrived without a manifest). ``ok`` with sha256/size, or the reason not."""
    location = f"s3://{bucket}/{key}" + (f" (version {s3_version_id})" if s3_version_id else "")
    with open(os.devnull, "wb") as sink:
        downloaded = _download(
            bucket=bucket,
            key=key,
            version_id=s3_version_id,
            expected_size=None,
            location=location,
            sink=sink,
        )
    if isinstance(downloaded, ValidationResult):
        return downloaded
    sha256, size, read_version = downloaded
    return ValidationResult(
        ok=True,
        error="",
        sha256=sha256,
        size=size,
        load_seconds=None,
        forward_ms=None,
        parameter_count=None,
        output_shape=None,
        s3_version_id=read_version or s3_version_id,
    )
