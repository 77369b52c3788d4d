"""The deploy-target interface.

A target runs revisions of the inference service. A revision pins one version
of the environment's SSM pointer through its ``MODEL_SSM_PARAMETER`` setting
(``/models/iris/production:7``, SSM's own version selector), so any instance
the target starts at any moment loads exactly what its revision was deployed
with, and the target's own automatic rollback restores the previous pin.

Every method is one short call (or a few) to AWS; none waits for anything.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class TargetError(Exception):
    """The target refused or cannot do what was asked (a permanent problem)."""


class TargetBusy(Exception):
    """The target is busy with another operation: try again later."""


class Phase(enum.StrEnum):
    RUNNING = "running"  # still working (including its own rollback)
    SUCCEEDED = "succeeded"  # the new revision takes the traffic
    ROLLED_BACK = "rolled_back"  # the target put the previous revision back itself
    FAILED = "failed"  # ended without the new revision; maybe without a rollback


@dataclass(frozen=True)
class Revision:
    """What the target runs (or is moving to) now."""

    pin: str | None  # the revision's MODEL_SSM_PARAMETER; None if it has none
    busy: bool  # an operation is in progress
    url: str = ""  # the service's base URL (with scheme), "" if it has none


@dataclass(frozen=True)
class OperationState:
    """One look at a deployment operation of the target."""

    phase: Phase
    status: str  # the target's own word for it (App Runner: ROLLBACK_SUCCEEDED ...)
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. canary traffic weights


class DeployTarget(Protocol):
    """What the deployment state machine needs from a target."""

    label: str  # "App Runner" ... for messages
    operation_label: str  # what the target calls its unit of work

    def describe(self) -> Revision:
        """The revision the target runs or is moving to."""
        ...

    def start(self, *, pin: str) -> str:
        """Deploy a revision whose MODEL_SSM_PARAMETER is ``pin``, everything
        else as the current revision; return the operation id.
        Raises TargetBusy while another operation runs, TargetError when refused."""
        ...

    def find_started(self, *, since: dt.datetime) -> str | None:
        """The id of a deployment operation started at or after ``since`` (the
        one an interrupted step may already have started), or None."""
        ...

    def poll(self, *, operation_id: str) -> OperationState | None:
        """Where the operation is; None when the target no longer knows it."""
        ...

    def stop(self, *, operation_id: str) -> bool:
        """Ask the target to roll back an operation in progress; False when
        the target has no such call (App Runner)."""
        ...
