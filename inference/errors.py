"""Why startup can stop, split into what retrying can fix and what it cannot."""

from __future__ import annotations


class StartupFailure(Exception):
    """A permanent reason the pointed-to model cannot be served.

    ``cause`` is a stable machine-readable code (``checksum_mismatch``,
    ``object_not_found``, ...); the message is the one log line an operator reads.
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


class TransientError(Exception):
    """A failure that may go away on its own (network, throttling, 5xx); worth retrying."""
