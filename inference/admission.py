"""Bounds on the work ``POST /predict`` holds at once: requests and body bytes in flight.

Past either bound a request is refused at once with 503 and ``Retry-After``,
before its body is read, instead of queueing without limit: a burst or a slow
client sending huge bodies then costs the instance a refusal, not its memory.
Used from the event loop only, so plain integers need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ticket:
    """What one admitted request holds; hand it back with :meth:`Admission.release`."""

    bytes: int = 0


class Admission:
    """Counts requests and reserved body bytes against ``max_requests`` and ``max_bytes``."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def enter(self) -> Ticket | None:
        """Return a ticket for one more request, or None when ``max_requests`` are in flight."""
        if self.requests >= self.max_requests:
            return None
        self.requests += 1
        return Ticket()

    def reserve(self, ticket: Ticket, size: int) -> bool:
        """Add ``size`` body bytes to ``ticket``; False (nothing added) past ``max_bytes``."""
        if self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        ticket.bytes += size
        return True

    def release(self, ticket: Ticket) -> None:
        """Give back the request and every byte ``ticket`` holds."""
        self.requests -= 1
        self.bytes -= ticket.bytes
        ticket.bytes = 0
