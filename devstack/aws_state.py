"""Keeps the embedded AWS's S3 objects and SSM parameters across restarts.

moto keeps everything in memory. The local stack saves the two services whose
state the product's records point into (S3 object versions pinned by
pointers, SSM parameter versions pinned by service revisions) to a file when
it stops and every minute, and loads it at start, so stopping and starting
the stack mid-deployment resumes against the same AWS. CloudWatch and
CloudWatch Logs start empty each time (they hold only observations).

This reaches into moto's backends (pinned in pyproject.toml); a file written by
another moto version is ignored with a warning rather than trusted.
"""

from __future__ import annotations

import copyreg
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import moto

logger = logging.getLogger(__name__)

_SCHEMA = 1


def _rebuild_key_store(lists: dict[str, list[Any]]) -> Any:
    from moto.s3.utils import _VersionedKeyStore

    store = _VersionedKeyStore()
    for key, versions in lists.items():
        store.setlist(key, versions)
    return store


def _reduce_key_store(store: Any) -> tuple[Any, tuple[dict[str, list[Any]]]]:
    # moto's key store is a dict whose items() yields only the newest version
    # of each key: pickled as is, every older object version would be lost.
    return _rebuild_key_store, ({key: store.getlist(key) for key in dict.keys(store)},)


def _register_reducers() -> None:
    from moto.s3.utils import _VersionedKeyStore

    copyreg.pickle(_VersionedKeyStore, _reduce_key_store)


def _backends() -> dict[str, Any]:
    from moto.s3.models import s3_backends
    from moto.ssm.models import ssm_backends

    return {"s3": s3_backends, "ssm": ssm_backends}


def _snapshot() -> dict[str, Any]:
    """{service: {account: {region: state}}} of what is kept."""
    _register_reducers()
    state: dict[str, Any] = {}
    for service, backends in _backends().items():
        accounts: dict[str, Any] = {}
        for account_id, regions in list(backends.items()):
            for region, backend in list(regions.items()):
                kept = backend.buckets if service == "s3" else backend._parameters
                if kept:
                    # Plain dicts: moto's own containers need arguments to unpickle.
                    accounts.setdefault(account_id, {})[region] = dict(kept)
        state[service] = accounts
    return state


def save_state(path: Path) -> bool:
    """Write the state to ``path`` atomically; return False if it could not."""
    for _ in range(3):  # the server thread may change a dict while we pickle it
        try:
            payload = pickle.dumps(
                {"schema": _SCHEMA, "moto": moto.__version__, "state": _snapshot()},
                protocol=pickle.HIGHEST_PROTOCOL,
            )
            break
        except RuntimeError:
            continue
    else:
        logger.warning("could not snapshot the embedded AWS (it kept changing)")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".aws-state-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError:
        logger.warning("could not save the embedded AWS to %s", path, exc_info=True)
        Path(temporary).unlink(missing_ok=True)
        return False
    return True


def load_state(path: Path) -> bool:
    """Load a state saved by ``save_state``; return True when one was loaded."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        # Our own file, written by this program into the local state folder.
        document = pickle.loads(raw)  # noqa: S301
    except Exception:
        logger.warning("ignoring an unreadable embedded AWS state file %s", path, exc_info=True)
        return False
    if (
        not isinstance(document, dict)
        or document.get("schema") != _SCHEMA
        or document.get("moto") != moto.__version__
    ):
        logger.warning("ignoring %s: written by another version of moto", path)
        return False
    backends = _backends()
    for service, accounts in document["state"].items():
        for account_id, regions in accounts.items():
            for region, kept in regions.items():
                backend = backends[service][account_id][region]
                if service == "s3":
                    backend.buckets.update(kept)
                else:
                    backend._parameters.update(kept)
    return True
