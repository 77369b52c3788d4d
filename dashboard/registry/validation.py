"""The validation gate: prove that a model version in S3 loads and runs, safely.

A validation is a *job* (:class:`ValidationJob`, plain JSON, made by the
dashboard with a presigned GET URL for the pinned object version) and a *run*
(:func:`run_job`): download with the URL (no AWS credentials needed), check
size and SHA-256, then load and run the model in the sandbox
(:mod:`dashboard.registry.sandbox`: bubblewrap namespaces, another uid, no
network, a read-only minimal root, seccomp, rlimits), and parse its answer
strictly. Nothing the model writes reaches a person unfiltered: the answer is
size-bounded JSON of numbers, shapes, operator names and fixed error kinds;
free text is truncated and stripped of control characters.

Memory limit: ``RLIMIT_DATA`` (private writable memory: heap, anonymous
mappings, thread stacks), set by prlimit before Python starts. Measured on the
reference machine (torch 2.13 CPU, one torch thread): ``import torch`` plus a
tiny TorchScript model needs about 225 MB of it, a torch.export model about
295 MB. ``RLIMIT_AS`` is set too, as a backstop, at the limit plus the
policy's headroom for the ~0.7 GB of libraries torch maps. Limits below
:data:`MIN_MEMORY_LIMIT_MB` are refused because torch itself would not start.

Time limit: wall clock, covering the whole sandbox (starting Python and
importing torch: about 1.5 s here, 2.5 s for torch.export); ``RLIMIT_CPU`` at
the same number of seconds backs it up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import httpx
from botocore.exceptions import BotoCoreError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from dashboard.aws import s3
from dashboard.aws.clients import client
from dashboard.aws.errors import AwsError, AwsNotFoundError, AwsTransientError, translate
from dashboard.registry import sandbox
from dashboard.registry.manifest import DTYPES, FORMATS
from dashboard.registry.names import VERSION_NAME_PATTERN

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

MIN_MEMORY_LIMIT_MB = 512
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
_MAX_STDERR_LINE = 300
_MAX_ERROR_CHARS = 400
_MAX_OPERATORS = 1000
_MAX_OUTPUTS = 256
_MAX_OUTPUT_DEPTH = 4
_MAX_DIMENSIONS = 16
_OOM_MARKERS = (
    "can't allocate memory",
    "cannot allocate memory",
    "std::bad_alloc",
    "memoryerror",
    "out of memory",
)
# The worker's fixed error kinds; anything else in an answer makes it malformed.
ANSWER_KINDS = frozenset(
    {"ok", "arguments", "unsafe", "load", "forward", "output", "memory", "file_system", "internal"}
)
_OUTPUT_NAME = re.compile(VERSION_NAME_PATTERN, re.ASCII)
_OPERATOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,80}(::[A-Za-z_][A-Za-z0-9_.]{0,80})?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

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
    operators: list[str] | None = None  # every operator the model's graphs call
    sandbox: str | None = None  # the VALIDATION_SANDBOX mode it ran under

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict (the dataclass's field names)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ValidationResult:
        """The inverse of :meth:`to_dict` (for results that crossed a queue)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in names})


@dataclass(frozen=True)
class ValidationJob:
    """Everything a validation worker needs, as plain data: it crosses the
    ``validation`` queue to a worker that has no AWS credentials and no database."""

    url: str  # presigned GET of the pinned object version
    location: str  # s3://bucket/key (version …), for messages
    s3_version_id: str | None
    expected_sha256: str | None
    expected_size: int | None
    format: str
    input_shape: list[int]
    input_dtype: str
    time_limit_seconds: float
    memory_limit_mb: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ValidationJob:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in names})


def make_job(
    *,
    bucket: str,
    key: str,
    s3_version_id: str | None,
    expected_sha256: str | None,
    expected_size: int | None,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    time_limit_seconds: float,
    memory_limit_mb: int,
    url_expires_seconds: int = 6 * 3600,
) -> ValidationJob:
    """Describe the validation of ``s3://bucket/key`` (version ``s3_version_id``),
    with a presigned URL valid long enough for the queue and the task's retries."""
    location = f"s3://{bucket}/{key}" + (f" (version {s3_version_id})" if s3_version_id else "")
    return ValidationJob(
        url=s3.presign_get_object(
            bucket=bucket, key=key, version_id=s3_version_id, expires_in=url_expires_seconds
        ),
        location=location,
        s3_version_id=s3_version_id,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
        format=format,
        input_shape=list(input_shape),
        input_dtype=input_dtype,
        time_limit_seconds=float(time_limit_seconds),
        memory_limit_mb=int(memory_limit_mb),
    )


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
    sandbox_mode: str | None = None,
) -> ValidationResult:
    """Download ``s3://bucket/key`` (version ``s3_version_id`` when given), verify it
    and prove it loads and runs on one example of ``input_shape``/``input_dtype``
    (:func:`make_job` then :func:`run_job`, in this process)."""
    _check_limits(time_limit_seconds, memory_limit_mb)
    job = make_job(
        bucket=bucket,
        key=key,
        s3_version_id=s3_version_id,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
        format=format,
        input_shape=input_shape,
        input_dtype=input_dtype,
        time_limit_seconds=time_limit_seconds,
        memory_limit_mb=memory_limit_mb,
    )
    return run_job(job, work_dir=work_dir, sandbox_mode=sandbox_mode)


def run_job(
    job: ValidationJob, *, work_dir: Path | None = None, sandbox_mode: str | None = None
) -> ValidationResult:
    """Download, verify and validate ``job`` in the sandbox (``sandbox_mode``,
    default the ``VALIDATION_SANDBOX`` setting).

    Returns a result for every fault of the object or the model (missing, wrong
    size or hash, unsafe, not loadable, forward fails, too slow, too big,
    crashes) and when the sandbox cannot be set up (it fails closed). Raises
    :class:`AwsTransientError` only when S3 could not be read for a reason worth
    retrying (throttling, 5xx, connection lost), and ValueError for limits this
    function cannot honour. The downloaded file is always deleted.
    """
    _check_limits(job.time_limit_seconds, job.memory_limit_mb)
    mode = sandbox_mode if sandbox_mode is not None else _configured_mode()
    if job.format not in FORMATS:
        return _failed(f"unsupported artifact format {job.format!r} (expected one of {FORMATS})")
    if job.input_dtype not in DTYPES:
        return _failed(f"unsupported input dtype {job.input_dtype!r} (expected one of {DTYPES})")

    base = work_dir if work_dir is not None else Path(tempfile.gettempdir())
    try:
        # A private folder: the sandbox gets the file by descriptor, nobody by name.
        folder = Path(tempfile.mkdtemp(prefix="modeldeck-validate-", dir=base))
    except OSError as exc:
        return _failed(f"the dashboard could not create a folder for the download in {base}: {exc}")
    path = folder / ("model.pt2" if job.format == "torch.export" else "model.pt")
    try:
        with path.open("wb") as sink:
            downloaded = _download_url(job, sink)
        if isinstance(downloaded, ValidationResult):
            return downloaded
        sha256, size, read_version = downloaded
        if job.expected_size is not None and size != job.expected_size:
            return _failed(
                f"size mismatch: S3 object has {size} bytes, the manifest says {job.expected_size}",
                sha256=sha256,
                size=size,
            )
        if job.expected_sha256 is not None and sha256 != job.expected_sha256.lower():
            return _failed(
                f"SHA-256 mismatch: S3 object has {sha256}, the manifest says "
                f"{job.expected_sha256}",
                sha256=sha256,
                size=size,
            )
        answer = run_sandboxed(
            path=path,
            format=job.format,
            input_shape=job.input_shape,
            input_dtype=job.input_dtype,
            time_limit_seconds=job.time_limit_seconds,
            memory_limit_mb=job.memory_limit_mb,
            mode=mode,
        )
        result = ValidationResult(
            ok=answer["kind"] == "ok",
            error="" if answer["kind"] == "ok" else answer["error"],
            sha256=sha256,
            size=size,
            load_seconds=answer.get("load_seconds"),
            forward_ms=answer.get("forward_ms"),
            parameter_count=answer.get("parameter_count"),
            output_shape=answer.get("output_shape"),
            s3_version_id=read_version or job.s3_version_id,
            operators=answer.get("operators"),
            sandbox=mode,
        )
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()
    if result.ok:
        logger.info("validated %s: loads in %.2f s", job.location, result.load_seconds or 0.0)
    else:
        logger.info("validation of %s failed: %s", job.location, result.error)
    return result


def run_ticket(ticket: dict[str, Any]) -> dict[str, Any]:
    """Run the job of a validation ticket (see ``services.validation_ticket_create``)
    and return the result as plain data for the trip back through the queue."""
    return run_job(ValidationJob.from_dict(ticket["job"])).to_dict()


def result_from_queue(document: dict[str, Any]) -> ValidationResult:
    """Rebuild a result that crossed the queue, re-checking every field as the
    sandbox's answer is checked (it came from a worker that ran untrusted code).
    A malformed one becomes an invalid result that says so."""
    try:
        ok = document.get("ok")
        if not isinstance(ok, bool):
            raise ValueError("ok is not a boolean")
        sha256 = document.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
            raise ValueError("sha256 is not a SHA-256")
        version = document.get("s3_version_id")
        if version is not None and not (isinstance(version, str) and len(version) <= 1024):
            raise ValueError("s3_version_id is not a version id")
        mode = document.get("sandbox")
        if mode is not None and mode not in sandbox.MODES:
            raise ValueError("sandbox is not a sandbox mode")
        error = document.get("error")
        if not isinstance(error, str):
            raise ValueError("error is not text")
        size = _count(document.get("size"))
        result = ValidationResult(
            ok=ok,
            error="" if ok else (clean_text(error) or "validation failed"),
            sha256=sha256,
            size=size,
            load_seconds=_seconds(document.get("load_seconds"), "load_seconds"),
            forward_ms=_seconds(document.get("forward_ms"), "forward_ms"),
            parameter_count=_count(document.get("parameter_count")),
            output_shape=_output_shape(document.get("output_shape")),
            s3_version_id=version,
            operators=_operators(document.get("operators")),
            sandbox=mode,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return _failed(f"the validation worker sent a malformed result ({exc})")
    if result.ok and result.output_shape is None:
        return _failed("the validation worker sent a malformed result (no output shape)")
    return result


def run_sandboxed(
    *,
    path: Path,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    time_limit_seconds: float,
    memory_limit_mb: int,
    mode: str,
    checks: bool = True,
) -> dict[str, Any]:
    """Run the sandbox on a verified local file; return its answer, parsed
    strictly (:func:`parse_answer`), or one whose ``error`` says why there is none.

    ``checks=False`` skips the pickle refusal and the graph scan inside the
    sandbox; only tests use it, to prove that the sandbox holds on its own.
    """
    rules = sandbox.policy()["seccomp"]
    arguments = {
        "format": format,
        "input_shape": input_shape,
        "input_dtype": input_dtype,
        "memory_limit_mb": memory_limit_mb,
        "checks": checks,
        "private_tmp": mode == "bwrap",
        "seccomp": {
            "worker_deny": list(rules["worker_deny"]),
            "file_lock_errno": int(rules["file_lock_errno"]),
        },
    }
    try:
        run = sandbox.run(
            artifact=path,
            arguments=arguments,
            time_limit_seconds=time_limit_seconds,
            memory_limit_mb=memory_limit_mb,
            mode=mode,
            bwrap=_configured_bwrap(),
        )
    except sandbox.SandboxUnavailable as exc:
        return _death(f"the validation sandbox is not available: {exc}", kind="sandbox")
    document = interpret_worker_exit(
        returncode=run.returncode,
        timed_out=run.timed_out,
        answer=run.answer,
        stderr=run.stderr,
        time_limit_seconds=time_limit_seconds,
        memory_limit_mb=memory_limit_mb,
    )
    if document.get("kind") == "died" and not run.timed_out:
        logger.warning(
            "validation sandbox left no answer (exit %s); its output ended with:\n%s",
            run.returncode,
            clean_text(run.stderr[-4000:], limit=4000),
        )
    return document


def _check_limits(time_limit_seconds: float, memory_limit_mb: int) -> None:
    if time_limit_seconds <= 0:
        raise ValueError("time_limit_seconds must be positive")
    if memory_limit_mb < MIN_MEMORY_LIMIT_MB:
        raise ValueError(
            f"memory_limit_mb must be at least {MIN_MEMORY_LIMIT_MB}: torch alone needs ~300 MB"
        )


def _configured_mode() -> str:
    from django.conf import settings

    return str(settings.VALIDATION_SANDBOX)


def _configured_bwrap() -> str:
    from django.conf import settings

    return str(getattr(settings, "VALIDATION_BWRAP", ""))


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


def _download_url(
    job: ValidationJob, sink: IO[bytes]
) -> tuple[str, int, str | None] | ValidationResult:
    """Stream the job's object into ``sink`` through its presigned URL, hashing as
    it arrives. Returns (sha256 hex, size, version id read), or a failed result
    when the object is missing or announces a size other than the expected one."""
    timeout = httpx.Timeout(30.0, connect=10.0)
    try:
        with httpx.stream("GET", job.url, timeout=timeout, follow_redirects=False) as response:
            if response.status_code != 200:
                body = response.read()[:4096].decode("utf-8", errors="replace")
                return _download_refused(job, response.status_code, body)
            announced = int(response.headers.get("content-length", -1))
            if job.expected_size is not None and announced >= 0 and announced != job.expected_size:
                return _failed(
                    f"size mismatch: S3 object has {announced} bytes, the manifest says "
                    f"{job.expected_size}",
                    size=announced,
                )
            digest = hashlib.sha256()
            size = 0
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                try:
                    sink.write(chunk)
                except OSError as exc:
                    return _failed(
                        f"the dashboard could not store the download of {job.location}: {exc}"
                    )
            version = response.headers.get("x-amz-version-id")
    except httpx.HTTPError as exc:
        raise AwsTransientError(
            f"GetObject failed while reading {job.location}: {exc}", operation="GetObject"
        ) from exc
    return digest.hexdigest(), size, (version if version and version != "null" else None)


def _download_refused(job: ValidationJob, status: int, body: str) -> ValidationResult:
    match = re.search(r"<Code>([^<]{1,64})</Code>", body)
    code = match.group(1) if match else ""
    missing = code in {"NoSuchKey", "NoSuchVersion", "NoSuchBucket"} or status == 404
    # A malformed version id is 400 InvalidArgument; one naming a delete marker, 405.
    if missing or (job.s3_version_id and code in {"InvalidArgument", "MethodNotAllowed"}):
        return _failed(f"no such object/version: {job.location} does not exist")
    if status >= 500 or code in {"SlowDown", "RequestTimeout", "InternalError"}:
        raise AwsTransientError(
            f"GetObject failed while reading {job.location}: HTTP {status} {code}",
            operation="GetObject",
        )
    return _failed(f"could not download {job.location}: HTTP {status} {code}".rstrip())


def interpret_worker_exit(
    *,
    returncode: int,
    timed_out: bool,
    answer: bytes | None,
    stderr: str,
    time_limit_seconds: float,
    memory_limit_mb: int,
) -> dict[str, Any]:
    """Return the sandbox's parsed answer, or one whose ``error`` explains why there is none."""
    if timed_out:
        return _death(f"validation exceeded its time limit of {time_limit_seconds:g} s")
    if answer is None:
        return _death(
            f"the validation process answered with more than {sandbox.MAX_ANSWER_BYTES} bytes"
        )
    if answer:
        try:
            return parse_answer(answer)
        except ValueError as exc:
            return _death(f"the validation process answered with a malformed result ({exc})")
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
        if number == signal.SIGXCPU:
            death = f"validation exceeded its CPU time limit of {math.ceil(time_limit_seconds)} s"
            return _death(death)
    else:
        death = f"the validation process exited with status {returncode} without a result"
    if any(marker in stderr.lower() for marker in _OOM_MARKERS):
        return _death(f"validation exceeded its memory limit of {memory_limit_mb} MB ({death})")
    return _death(death + detail)


def parse_answer(raw: bytes) -> dict[str, Any]:
    """Parse the sandbox's answer: one JSON object of known fields, each of its
    type and within bounds. Raises ValueError naming the first field that is not."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"non-standard number {name}")

    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(document, dict):
        raise ValueError("not an object")
    kind = document.get("kind")
    if kind not in ANSWER_KINDS:
        raise ValueError("unknown kind")
    if not isinstance(document.get("ok"), bool) or document["ok"] != (kind == "ok"):
        raise ValueError("ok does not match kind")
    error = document.get("error")
    if not isinstance(error, str):
        raise ValueError("error is not text")
    parsed: dict[str, Any] = {
        "ok": document["ok"],
        "kind": kind,
        "error": clean_text(error) if kind != "ok" else "",
        "load_seconds": _seconds(document.get("load_seconds"), "load_seconds"),
        "forward_ms": _seconds(document.get("forward_ms"), "forward_ms"),
        "parameter_count": _count(document.get("parameter_count")),
        "output_shape": _output_shape(document.get("output_shape")),
        "operators": _operators(document.get("operators")),
    }
    if kind != "ok" and not parsed["error"]:
        parsed["error"] = f"the validation failed ({kind})"
    if kind == "ok" and parsed["output_shape"] is None:
        raise ValueError("a valid model without an output shape")
    return parsed


def clean_text(text: str, *, limit: int = _MAX_ERROR_CHARS) -> str:
    """One line of at most ``limit`` characters without control characters
    (no terminal escapes, no bidirectional overrides, no line breaks)."""
    cleaned = _CONTROL.sub(" ", text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _seconds(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is not a number")
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise ValueError(f"{name} is out of range")
    return float(value)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("parameter_count is not a count")
    return value


def _output_shape(value: Any) -> OutputShape | None:
    if value is None:
        return None
    budget = [_MAX_OUTPUTS]

    def shape(item: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("output_shape has too many entries")
        if isinstance(item, list) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in item
        ):
            if len(item) > _MAX_DIMENSIONS or any(not 0 <= d < 2**63 for d in item):
                raise ValueError("output_shape has an impossible tensor shape")
            return list(item)
        if depth >= _MAX_OUTPUT_DEPTH:
            raise ValueError("output_shape is nested too deep")
        if isinstance(item, list):
            return [shape(entry, depth + 1) for entry in item]
        if isinstance(item, dict):
            if any(not isinstance(k, str) or not _OUTPUT_NAME.fullmatch(k) for k in item):
                raise ValueError("an output name is not a valid name")
            return {k: shape(v, depth + 1) for k, v in item.items()}
        raise ValueError("output_shape is not a shape")

    described = shape(value, 0)
    if not isinstance(described, list | dict):
        raise ValueError("output_shape is not a shape")
    return described


def _operators(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > _MAX_OPERATORS:
        raise ValueError("operators is not a list of names")
    if any(not isinstance(name, str) or not _OPERATOR_NAME.fullmatch(name) for name in value):
        raise ValueError("operators holds something other than operator names")
    return sorted(set(value))


def _death(error: str, *, kind: str = "died") -> dict[str, Any]:
    return {
        "ok": False,
        "kind": kind,
        "error": clean_text(error),
        "load_seconds": None,
        "forward_ms": None,
        "parameter_count": None,
        "output_shape": None,
        "operators": None,
    }


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return clean_text(lines[-1], limit=_MAX_STDERR_LINE)


# --- hashing artifacts that came without a manifest (the dashboard's own worker) ---


def _s3() -> S3Client:
    return cast("S3Client", client("s3"))


def hash_version(*, bucket: str, key: str, s3_version_id: str | None) -> ValidationResult:
    """Stream an object through SHA-256 without keeping it (for artifacts that
    arrived without a manifest). ``ok`` with sha256/size, or the reason not."""
    location = f"s3://{bucket}/{key}" + (f" (version {s3_version_id})" if s3_version_id else "")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if s3_version_id:
        kwargs["VersionId"] = s3_version_id
    try:
        response = _s3().get_object(**kwargs)
    except Exception as exc:
        error = translate(exc, operation="GetObject")
        if isinstance(error, AwsNotFoundError) or _names_missing_version(error, s3_version_id):
            return _failed(f"no such object/version: {location} does not exist")
        if error.transient:
            raise error from exc
        return _failed(f"could not download {location}: {error}")
    body = response["Body"]
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            try:
                chunk = body.read(DOWNLOAD_CHUNK_BYTES)
            except (BotoCoreError, Urllib3HTTPError, OSError) as exc:
                raise AwsTransientError(
                    f"GetObject failed while reading {location}: {exc}", operation="GetObject"
                ) from exc
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    version = response.get("VersionId")
    return ValidationResult(
        ok=True,
        error="",
        sha256=digest.hexdigest(),
        size=size,
        load_seconds=None,
        forward_ms=None,
        parameter_count=None,
        output_shape=None,
        s3_version_id=(version if version and version != "null" else None) or s3_version_id,
    )


def _names_missing_version(error: AwsError, version_id: str | None) -> bool:
    # S3 answers a malformed version id with 400 InvalidArgument, and a version
    # id that names a delete marker with 405 MethodNotAllowed.
    return bool(version_id) and error.code in {"InvalidArgument", "MethodNotAllowed"}
