"""The short-lived cache of an environment's live checks (SSM pointer and the
service's /version): page views read it; a deployment that changes either
forgets it, so no page shows a stale state as drift."""

from __future__ import annotations

import logging

from django.core.cache import cache

logger = logging.getLogger(__name__)


def state_cache_key(environment_id: int) -> str:
    return f"modeldeck:environment-state:{environment_id}"


def state_forget(environment_id: int) -> None:
    try:
        cache.delete(state_cache_key(environment_id))
    except Exception:  # a cache outage must not fail a deployment step
        logger.warning("could not clear the state cache of environment %s", environment_id)
