"""Optional bearer-key protection of ``/predict``."""

from __future__ import annotations

import hmac


class ApiKeys:
    """The accepted keys; with none configured every request is allowed."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        """Return True when requests must present a key."""
        return bool(self._keys)

    def allows(self, authorization: str | None) -> bool:
        """Return True if the ``Authorization`` header carries an accepted bearer key.

        Every configured key is compared, each in constant time, so the answer's
        timing says nothing about which key came close.
        """
        if not self._keys:
            return True
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return False
        presented = credential.strip().encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return matched
