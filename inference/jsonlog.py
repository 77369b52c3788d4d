"""One JSON document per log line, for CloudWatch Logs Insights and friends.

Fields passed with ``extra={...}`` become top-level keys (``_document``: the
whole line). A traceback, when there is one, goes into the ``exc`` field of
the same line, so one event is always one line.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "msg", ...extra, "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON.

        A record with a ``_document`` dict (``extra={"_document": {...}}``) is
        written as exactly that document: an EMF line must keep its own shape.
        """
        raw = record.__dict__.get("_document")
        if isinstance(raw, dict):
            return orjson.dumps(raw).decode()
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str) -> None:
    """Send every logger (ours, uvicorn's, torch's) to stdout as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # None of these end up in a line (see JsonFormatter), yet every record pays for
    # them: locating the caller walks the stack, the others look up thread and
    # process names. Together about a fifth of an access line's cost.
    logging._srcfile = None  # the documented switch that skips findCaller()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # torch installs its own plain-text handler on "torch" at import; route it here too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "torch"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
