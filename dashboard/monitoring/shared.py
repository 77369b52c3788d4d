"""One answer per cache key across every web process: what keeps twenty open
metrics pages (and their ECS service lookups) as cheap as one."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

_LOCK_WAIT_SECONDS = 10.0


def shared_answer(key: str, ttl: int, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``compute()`` once per ``key`` and ``ttl`` across every web process.

    Returns (answer, whether it came from the cache). While one process
    computes, the others wait (up to 10 s) for its answer instead of computing
    it too. A failure is not cached: the next request tries again. Without a
    working cache (Redis down) every request computes its own answer.
    """
    try:
        found = cache.get(key)
        if found is not None:
            return found, True
        lock = f"{key}:lock"
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        while not cache.add(lock, 1, timeout=30):
            time.sleep(0.05)
            found = cache.get(key)
            if found is not None:
                return found, True
            if time.monotonic() > deadline:
                break  # the holder is stuck or dead: answer ourselves
        found = cache.get(key)
        if found is not None:
            cache.delete(lock)
            return found, True
    except Exception as exc:  # the cache is an optimisation, never a dependency
        logger.warning("monitoring cache unavailable, asking AWS directly: %s", exc)
        return compute(), False
    try:
        answer = compute()
        with contextlib.suppress(Exception):
            cache.set(key, answer, max(1, ttl))
        return answer, False
    finally:
        with contextlib.suppress(Exception):
            cache.delete(lock)
