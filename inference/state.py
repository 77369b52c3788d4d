"""Where startup is, shared between the loader thread and the request handlers."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.pointer import Pointer


class Phase(enum.StrEnum):
    """Startup phases in order, then the two end states."""

    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class LoadedModel:
    """A model that passed verification and warm-up, and what it was loaded from."""

    pointer: Pointer
    module: Any
    path: Path
    loaded_at: datetime

    def forward(self, batch: np.ndarray) -> Any:
        """Return the module's output for ``batch`` (the batch dimension first)."""
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch))

    def version_info(self) -> dict[str, str]:
        """Return the ``/version`` document."""
        return {
            "model": self.pointer.model,
            "version": self.pointer.version,
            "sha256": self.pointer.sha256,
            "format": self.pointer.format,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class Status:
    """A consistent snapshot: the phase, a human detail, the failure cause if any."""

    phase: Phase
    detail: str
    cause: str | None = None


class ModelState:
    """The current phase and, once ready, the loaded model. Safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = Status(Phase.RESOLVING, "resolving the model pointer")
        self._model: LoadedModel | None = None
        self._settled = threading.Event()

    @property
    def status(self) -> Status:
        """Return the current status snapshot."""
        return self._status

    @property
    def model(self) -> LoadedModel | None:
        """Return the loaded model once ready, else None."""
        return self._model

    def enter(self, phase: Phase, detail: str) -> None:
        """Move to an in-progress ``phase`` (or update its detail)."""
        with self._lock:
            if self._status.phase not in (Phase.READY, Phase.FAILED):
                self._status = Status(phase, detail)

    def ready(self, model: LoadedModel) -> None:
        """Publish ``model``; from now on the instance is ready."""
        with self._lock:
            self._model = model
            self._status = Status(
                Phase.READY, f"serving {model.pointer.model} {model.pointer.version}"
            )
        self._settled.set()

    def fail(self, cause: str, message: str) -> None:
        """End startup for good with ``message``; the instance never becomes ready."""
        with self._lock:
            self._status = Status(Phase.FAILED, message, cause)
        self._settled.set()

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until ready or failed; return False on timeout."""
        return self._settled.wait(timeout)
