"""The local artifact cache: files named by their SHA-256, bounded, least-recently-used out.

Layout of ``MODEL_CACHE_DIR``::

    <sha256 hex>                         a complete, verified artifact
    .tmp-<sha256 hex>-<pid>-<random>     a download in progress (or a crashed one)

An entry only ever appears under its final name through ``rename`` after its
bytes were hashed and fsynced, so a file with a final name is complete. A
download holds an exclusive ``flock`` on its temporary file for its whole life;
a temporary file nobody holds a lock on was left by a dead process and is
deleted. Recency is the file's mtime, refreshed on every use (atime is not
trustworthy on ``noatime`` mounts). Files with other names are left alone.

Verification stamps: once this service has seen an entry's bytes hash to its
name (while downloading it, or by re-hashing it), it records that in the
extended attribute ``user.modeldeck.verified`` as ``<sha256> <size> <mtime_ns>``.
A later start whose stat of the file still matches the stamp knows the bytes
have not been rewritten, truncated or replaced since, without reading them,
the way git's index trusts unchanged stat data. What a stamp cannot see is a
change that keeps size and mtime (bit rot on the disk, or someone resetting
the mtime on purpose); ``MODEL_CACHE_VERIFY=full`` re-hashes every time for
that. Filesystems without user xattrs simply never have stamps.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}$")
_TMP_PREFIX = ".tmp-"
_HASH_CHUNK = 4 * 1024 * 1024
# A writer creates its temporary file and locks it a moment later; a file this young
# may be in that moment, so it is not judged abandoned yet.
_TMP_GRACE_SECONDS = 60.0
STAMP_ATTRIBUTE = "user.modeldeck.verified"


@dataclass(frozen=True)
class CachedFile:
    """A cache hit: the entry's path, its size, and whether a valid stamp vouches for it."""

    path: Path
    size: int
    stamped: bool


@dataclass(frozen=True)
class CacheEntry:
    """One complete artifact in the cache."""

    path: Path
    size: int
    last_used: float


class PendingEntry:
    """A temporary file being filled; becomes a cache entry only through :meth:`commit`."""

    def __init__(self, fd: int, tmp_path: Path, final_path: Path) -> None:
        self.fd = fd
        self.tmp_path = tmp_path
        self.final_path = final_path
        self.committed = False

    def commit(self) -> Path:
        """Stamp the (verified) bytes, flush them to disk, rename them into place.

        Returns the entry's path. Call only once the bytes are known to hash to
        the entry's name.
        """
        write_stamp(self.fd, self.final_path.name)
        os.fsync(self.fd)
        os.replace(self.tmp_path, self.final_path)
        # The rename itself must survive a crash too, or a restart finds nothing.
        dir_fd = os.open(self.final_path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.committed = True
        return self.final_path


class ModelCache:
    """Artifacts keyed by SHA-256 under one directory, at most ``max_bytes`` in total."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Return where the entry for ``sha256`` lives (whether or not it exists)."""
        return self.directory / sha256

    def lookup(self, sha256: str) -> CachedFile | None:
        """Return the entry and mark it used, or None when it is not cached.

        ``stamped`` is True when the entry carries a stamp that still matches it
        (see the module docstring); the stamp is carried over the recency update.
        """
        path = self.path_for(sha256)
        try:
            before = os.stat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(before.st_mode):
            return None
        stamped = read_stamp(path) == _stamp_text(sha256, before)
        os.utime(path)
        if stamped:
            # Refreshing the mtime just invalidated the stamp; renew it, or the next
            # start would have to re-hash.
            stamped = write_stamp(path, sha256)
        return CachedFile(path=path, size=before.st_size, stamped=stamped)

    def stamp(self, sha256: str) -> bool:
        """Record that the entry's bytes were just verified; False if the stamp could not be set."""
        return write_stamp(self.path_for(sha256), sha256)

    def discard(self, sha256: str) -> None:
        """Delete the entry for ``sha256`` if present."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(sha256).unlink()

    def entries(self) -> list[CacheEntry]:
        """Return the complete entries, least recently used first."""
        found = []
        for path in self.directory.iterdir():
            if not _ENTRY_NAME.match(path.name):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # evicted by another process sharing the directory
            found.append(CacheEntry(path=path, size=stat.st_size, last_used=stat.st_mtime))
        found.sort(key=lambda entry: entry.last_used)
        return found

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files no live download holds; return what was deleted."""
        removed = []
        now = time.time()
        for path in self.directory.glob(f"{_TMP_PREFIX}*"):
            try:
                if now - path.stat().st_mtime < _TMP_GRACE_SECONDS:
                    continue
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is downloading into it right now
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
            finally:
                os.close(fd)
        return removed

    def make_room(self, size: int, *, keep: str) -> list[Path]:
        """Evict least-recently-used entries until ``size`` more bytes fit; return them.

        The entry named ``keep`` is never evicted. When ``size`` alone exceeds the
        bound everything else is evicted and the caller may still write: serving
        the promoted model matters more than the cache bound.
        """
        entries = [e for e in self.entries() if e.path.name != keep]
        total = sum(e.size for e in entries)
        evicted = []
        for entry in entries:
            if total + size <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
            total -= entry.size
            evicted.append(entry.path)
            logger.info(
                "evicted %s from the model cache",
                entry.path.name,
                extra={"event": "cache_evict", "sha256": entry.path.name, "bytes": entry.size},
            )
        if total + size > self.max_bytes:
            logger.warning(
                "the model (%d bytes) is larger than MODEL_CACHE_MAX_BYTES (%d); caching it anyway",
                size,
                self.max_bytes,
                extra={"event": "cache_oversize"},
            )
        return evicted

    @contextlib.contextmanager
    def pending(self, sha256: str, size: int) -> Iterator[PendingEntry]:
        """Yield a locked, pre-sized temporary file for ``sha256``.

        Unless :meth:`PendingEntry.commit` was called by the time the block exits
        (normally or by an exception), the temporary file is deleted.
        """
        tmp_path = self.directory / f"{_TMP_PREFIX}{sha256}-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        pending = PendingEntry(fd, tmp_path, self.path_for(sha256))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Reserving the space up front turns a full disk into an error before the
            # download instead of after most of it.
            os.posix_fallocate(fd, 0, size)
            yield pending
        finally:
            if not pending.committed:
                with contextlib.suppress(FileNotFoundError):
                    tmp_path.unlink()
            os.close(fd)


def write_stamp(target: Path | int, sha256: str) -> bool:
    """Stamp the file ``target`` (a path or an open descriptor) as verified for ``sha256``.

    Returns False, leaving the file unstamped, where the filesystem does not take
    user extended attributes or the file is not writable.
    """
    try:
        value = _stamp_text(sha256, os.stat(target)).encode()
        os.setxattr(target, STAMP_ATTRIBUTE, value)
    except OSError as exc:
        logger.debug("cannot stamp %s: %s", target, exc, extra={"event": "cache_stamp_failed"})
        return False
    return True


def read_stamp(path: Path) -> str | None:
    """Return the stamp text on ``path``, or None when it has none (or cannot have one)."""
    try:
        return os.getxattr(path, STAMP_ATTRIBUTE).decode("ascii", "replace")
    except OSError:
        return None


def _stamp_text(sha256: str, st: os.stat_result) -> str:
    return f"{sha256} {st.st_size} {st.st_mtime_ns}"


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
