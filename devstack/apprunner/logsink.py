"""Where the stand-in's log lines go.

Every line an instance prints, and every event of the service's life
(deployment started, health check failed, traffic switched), becomes one
LogRecord handed to a LogSink. The stand-in writes them to its stdout and to
``<state_dir>/logs/<service>.log``; shipping them to CloudWatch Logs is one more
sink (App Runner's ``application`` log group gets the ``stdout``/``stderr``
records, its ``service`` log group the ``service`` ones).
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TextIO

Stream = Literal["stdout", "stderr", "service"]


@dataclass(frozen=True)
class LogRecord:
    """One log line of one service."""

    timestamp: float  # seconds since the epoch
    service: str
    service_arn: str
    instance_id: str | None  # None for service events not tied to one instance
    stream: Stream
    message: str  # one line, without the line break

    @property
    def prefix(self) -> str:
        """``[<service>/<instance>]``, or ``[<service>]`` for service events."""
        if self.instance_id:
            return f"[{self.service}/{self.instance_id}]"
        return f"[{self.service}]"


class LogSink(Protocol):
    """Receives log records.

    ``emit`` is called on the stand-in's event loop for every line, so it must
    not block for long: a sink that talks to the network should queue and ship
    from its own thread. ``close`` is called once at shutdown and flushes.
    """

    def emit(self, record: LogRecord) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """Writes ``[<service>/<instance>] line`` to a text stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def emit(self, record: LogRecord) -> None:
        stream = self._stream or sys.stdout
        stream.write(f"{record.prefix} {record.message}\n")
        stream.flush()

    def close(self) -> None:
        (self._stream or sys.stdout).flush()


class FileSink:
    """Appends ``<UTC time> [<service>/<instance>] line`` to ``<directory>/<service>.log``."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files: dict[str, TextIO] = {}

    def path_for(self, service: str) -> Path:
        """Return the log file of ``service``."""
        return self._directory / f"{service}.log"

    def emit(self, record: LogRecord) -> None:
        handle = self._files.get(record.service)
        if handle is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            handle = self.path_for(record.service).open("a", encoding="utf-8", buffering=1)
            self._files[record.service] = handle
        at = dt.datetime.fromtimestamp(record.timestamp, tz=dt.UTC)
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        handle.write(f"{stamp} {record.prefix} {record.message}\n")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class MemorySink:
    """Keeps records in memory; thread-safe reads (for tests and diagnostics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[LogRecord] = []

    def emit(self, record: LogRecord) -> None:
        with self._lock:
            self._records.append(record)

    def close(self) -> None:
        pass

    def records(self, service: str | None = None) -> list[LogRecord]:
        """Return a snapshot of the records so far, optionally of one service."""
        with self._lock:
            return [r for r in self._records if service is None or r.service == service]


class FanOutSink:
    """Hands every record to several sinks; one failing sink does not silence the others."""

    def __init__(self, sinks: Iterable[LogSink]) -> None:
        self._sinks = list(sinks)

    def emit(self, record: LogRecord) -> None:
        for sink in self._sinks:
            try:
                sink.emit(record)
            except Exception as exc:  # a broken sink must never take a deployment down
                sys.stderr.write(f"apprunner: log sink {type(sink).__name__} failed: {exc}\n")

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                sys.stderr.write(f"apprunner: closing {type(sink).__name__} failed: {exc}\n")
