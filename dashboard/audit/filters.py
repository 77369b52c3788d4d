"""Filters of the audit page and the deployments list, parsed strictly from
query strings: a bad value is an error that names its parameter, never a
filter silently dropped (a CSV export that ignored ``since`` would look right
and be wrong)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from dashboard.registry.names import (
    InvalidName,
    validate_environment_name,
    validate_model_name,
    validate_version_name,
)


class FilterError(ValueError):
    """A query parameter with a value that cannot be used."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


def parse_bound(value: str, *, parameter: str, end: bool) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware UTC instant.

    ``end=False`` (since) gives the first instant included; ``end=True``
    (until) gives the first instant *excluded*: a date means the whole day
    (``until=2026-11-24`` includes that day), a date-time includes itself.
    A date-time without a zone is read as UTC, the zone the pages show.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end else start
        instant = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            parameter,
            f"{value[:40]!r} is not an ISO 8601 date or date-time "
            "(e.g. 2026-11-24 or 2026-11-24T03:10:00Z)",
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant + dt.timedelta(microseconds=1) if end else instant


def _bound(value: str, *, parameter: str, end: bool) -> dt.datetime:
    try:
        return parse_bound(value, parameter=parameter, end=end)
    except OverflowError:  # the day after 9999-12-31
        raise FilterError(parameter, f"{value[:40]!r} is out of range") from None


def parse_range(
    since: str | None, until: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(first instant included, first instant excluded); either may be None."""
    lower = _bound(since, parameter="since", end=False) if since else None
    upper = _bound(until, parameter="until", end=True) if until else None
    if lower is not None and upper is not None and lower >= upper:
        raise FilterError("until", "must not be before since")
    return lower, upper


def parse_name(value: str | None, *, parameter: str) -> str | None:
    """A model, environment or version name (None when absent)."""
    if not value:
        return None
    check = {
        "model": validate_model_name,
        "environment": validate_environment_name,
        "version": validate_version_name,
    }[parameter]
    try:
        return check(value)
    except InvalidName as exc:
        raise FilterError(parameter, str(exc)) from None


def parse_choices(value: str | None, *, parameter: str, allowed: Iterable[str]) -> list[str] | None:
    """One value or a comma-separated list of values, each one of ``allowed``."""
    if not value:
        return None
    choices = list(allowed)
    values = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in values if v not in choices]
    if unknown or not values:
        shown = ", ".join(repr(v[:40]) for v in unknown[:3]) or repr(value[:40])
        raise FilterError(parameter, f"{shown} is not one of {', '.join(choices)}")
    return list(dict.fromkeys(values))


def parse_username(value: str | None, *, parameter: str) -> str | None:
    if not value:
        return None
    value = value.strip()
    if len(value) > 255:
        raise FilterError(parameter, "a username has at most 255 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise FilterError(parameter, "a username has no control characters")
    return value or None


@dataclass(frozen=True)
class AuditFilters:
    """What the audit page filters by; every field optional."""

    actions: list[str] | None = None
    model: str | None = None
    environment: str | None = None
    version: str | None = None
    user: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None  # exclusive
    deployment: int | None = None


@dataclass(frozen=True)
class DeploymentFilters:
    """What ``GET /api/deployments`` filters by; every field optional."""

    model: str | None = None
    environment: str | None = None
    kinds: list[str] | None = None
    statuses: list[str] | None = None
    requested_by: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None  # exclusive
