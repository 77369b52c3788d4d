"""``python -m inference.bake SRC DEST``: prepare a model to be baked into the image.

SRC is a directory holding ``pointer.json`` (the contract's pointer document)
and the artifact, named like the last segment of the pointer's ``key`` (or the
only other file there). The artifact is checked against the pointer's size and
SHA-256, then laid out as the service expects, so that a container started with
``MODEL_POINTER_FILE=DEST/pointer.json`` and ``MODEL_CACHE_DIR=DEST/cache``
finds it in the cache and downloads nothing::

    DEST/pointer.json
    DEST/cache/<sha256>

A mismatch fails the build instead of producing an image that never gets ready.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from inference.cache import file_sha256, write_stamp
from inference.errors import StartupFailure
from inference.pointer import parse_pointer


def bake(source: Path, dest: Path) -> Path:
    """Copy the verified artifact of ``source`` into ``dest``; return its cache path.

    Raises ValueError naming what is wrong with ``source``.
    """
    pointer_path = source / "pointer.json"
    try:
        pointer = parse_pointer(pointer_path.read_bytes(), source=str(pointer_path))
    except OSError as exc:
        raise ValueError(f"{pointer_path} is unreadable: {exc}") from exc
    except StartupFailure as exc:
        raise ValueError(exc.message) from exc
    artifact = source / pointer.key.rsplit("/", 1)[-1]
    if not artifact.is_file():
        others = [p for p in source.iterdir() if p.is_file() and p.name != "pointer.json"]
        if len(others) != 1:
            raise ValueError(
                f"{source} must hold pointer.json and the artifact {artifact.name} "
                f"(found {sorted(p.name for p in others)})"
            )
        artifact = others[0]
    size = artifact.stat().st_size
    if size != pointer.size:
        raise ValueError(f"{artifact} is {size} bytes, the pointer says {pointer.size}")
    digest = file_sha256(artifact)
    if digest != pointer.sha256:
        raise ValueError(f"{artifact} has SHA-256 {digest}, the pointer says {pointer.sha256}")
    cache = dest / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / pointer.sha256
    shutil.copyfile(artifact, target)
    # Where the image layer keeps user xattrs and the mtime, the container's first
    # start trusts this stamp instead of re-hashing; elsewhere it re-hashes once.
    write_stamp(target, pointer.sha256)
    shutil.copyfile(pointer_path, dest / "pointer.json")
    return target


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m inference.bake", description=__doc__)
    parser.add_argument("source", type=Path, help="directory with pointer.json and the artifact")
    parser.add_argument("dest", type=Path, help="directory to lay the baked model out in")
    args = parser.parse_args(argv)
    try:
        target = bake(args.source, args.dest)
    except ValueError as exc:
        print(f"cannot bake the model: {exc}", file=sys.stderr)
        return 1
    print(f"baked {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
