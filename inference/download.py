"""Parallel ranged download of one pinned S3 object version, hashed as it arrives.

Parts are fetched concurrently and written with ``pwrite`` at their own offsets,
while this thread feeds the SHA-256 with the parts strictly in order as each
next contiguous one completes. The bytes are therefore read from the network
once and hashed once, with no second pass over the file. To bound memory, a part
is only requested when it is within ``2 * concurrency`` parts of the one being
hashed, so at most that many parts are held at a time.

The bytes are also flushed behind the download: whenever another
``FLUSH_BEHIND_BYTES`` have been hashed, a background ``fdatasync`` starts (one at
a time). The kernel would otherwise keep the whole artifact as dirty pages until
the commit's ``fsync``, which then writes all of it at once after the network is
done (seconds for a 1 GB model); this way the disk works while the network does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inference.aws import RetryPolicy, Stopped, translate_error
from inference.errors import StartupFailure, TransientError
from inference.pointer import Pointer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
FLUSH_BEHIND_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    """Inclusive byte range ``[start, end]`` of the object, numbered from 0."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        """Number of bytes in the part."""
        return self.end - self.start + 1


def plan_parts(size: int, part_size: int) -> list[Part]:
    """Return the parts covering ``size`` bytes, each ``part_size`` long but the last."""
    return [
        Part(index=i, start=start, end=min(start + part_size, size) - 1)
        for i, start in enumerate(range(0, size, part_size))
    ]


def download_object(
    client: S3Client,
    pointer: Pointer,
    fd: int,
    *,
    part_size: int,
    concurrency: int,
    policy: RetryPolicy,
    on_progress: Callable[[int], None] = lambda done: None,
    flush_every: int = FLUSH_BEHIND_BYTES,
) -> str:
    """Write the pinned object version into ``fd`` and return its hex SHA-256.

    Raises StartupFailure when S3 says the object or version does not exist, or
    the object is not ``pointer.size`` bytes long (``size_mismatch``); raises
    Stopped when the policy's stop event is set. The caller compares the digest.
    """
    parts = plan_parts(pointer.size, part_size)
    digest = hashlib.sha256()
    window = 2 * concurrency
    done_bytes = 0
    # Parts retry on their own event so that one part failing for good also stops
    # the others' backoff sleeps instead of waiting them out.
    abort = threading.Event()
    part_policy = dataclasses.replace(policy, stop=abort)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
    futures: dict[int, Future[bytes]] = {}
    flusher = _Flusher(fd, flush_every)
    try:
        submitted = 0
        for part in parts:
            while submitted < len(parts) and submitted < part.index + window:
                futures[submitted] = pool.submit(
                    _fetch_part, client, pointer, parts[submitted], fd, part_policy, len(parts)
                )
                submitted += 1
            future = futures.pop(part.index)
            while not wait([future], timeout=0.25).done:
                if policy.stop.is_set():
                    raise Stopped()
            data = future.result()
            digest.update(data)
            done_bytes += len(data)
            flusher.written(done_bytes)
            on_progress(done_bytes)
    finally:
        abort.set()
        # Parts still queued are dropped; running ones end after their current request.
        pool.shutdown(wait=True, cancel_futures=True)
        # The caller closes fd next; no fdatasync may still be using it (or a reused number).
        flusher.close()
    if policy.stop.is_set():
        raise Stopped()
    return digest.hexdigest()


class _Flusher:
    """Starts an ``fdatasync`` of ``fd`` in the background every ``every`` bytes."""

    def __init__(self, fd: int, every: int) -> None:
        self.fd = fd
        self.every = every
        self.flushed_to = 0
        self.thread: threading.Thread | None = None

    def written(self, offset: int) -> None:
        """Note that every byte before ``offset`` has been written."""
        if offset - self.flushed_to < self.every:
            return
        if self.thread is not None and self.thread.is_alive():
            return  # one at a time; the next one covers these bytes too
        self.flushed_to = offset
        self.thread = threading.Thread(target=self._sync, name="flush-behind", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Wait for a running ``fdatasync``."""
        if self.thread is not None:
            self.thread.join()

    def _sync(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            # Only an optimisation: the commit's fsync reports real problems.
            logger.debug("flush-behind failed: %s", exc, extra={"event": "flush_behind_failed"})


def _fetch_part(
    client: S3Client, pointer: Pointer, part: Part, fd: int, policy: RetryPolicy, count: int
) -> bytes:
    where = f"s3://{pointer.bucket}/{pointer.key} version {pointer.s3_version_id}"

    def attempt() -> bytes:
        try:
            response = client.get_object(
                Bucket=pointer.bucket,
                Key=pointer.key,
                VersionId=pointer.s3_version_id,
                Range=f"bytes={part.start}-{part.end}",
            )
            _check_total(response.get("ContentRange"), pointer, where)
            data = response["Body"].read()
        except (StartupFailure, TransientError):
            raise
        except Exception as exc:
            translated = translate_error(exc, what=f"GET {where}", not_found="object_not_found")
            if translated is exc:
                raise
            if isinstance(translated, StartupFailure) and "InvalidRange" in translated.message:
                translated = StartupFailure(
                    "size_mismatch",
                    f"{where} is shorter than the pointer's size {pointer.size}: {translated}",
                )
            elif (
                isinstance(translated, StartupFailure) and "MethodNotAllowed" in translated.message
            ):
                # S3's answer to a GET of a version that is a delete marker.
                translated = StartupFailure(
                    "object_not_found", f"{where} is a delete marker, not an object: {translated}"
                )
            raise translated from exc
        if len(data) != part.length:
            # A body cut short without an exception: a dropped connection, retry it.
            raise TransientError(
                f"GET {where} bytes {part.start}-{part.end}: got {len(data)} bytes"
            )
        _pwrite_all(fd, data, part.start)
        return data

    return policy.call(attempt, what=f"s3:GetObject part {part.index + 1}/{count}")


def _check_total(content_range: str | None, pointer: Pointer, where: str) -> None:
    # Every ranged answer states the object's full length, so a pointer whose size
    # disagrees with S3 is caught on the first part, not after the whole download.
    match = _CONTENT_RANGE.match(content_range or "")
    if match is None:
        raise TransientError(f"GET {where}: unexpected Content-Range {content_range!r}")
    total = match.group(3)
    if total != "*" and int(total) != pointer.size:
        raise StartupFailure(
            "size_mismatch",
            f"{where} is {total} bytes but the pointer says {pointer.size}",
        )


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
