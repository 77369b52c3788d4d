"""Reads of the model registry, from the database index of S3.

Every list read costs the same with 100 versions or 100,000 (docs/registry.md,
"At scale"):

- each (filter, sort) pair has an index that yields rows in the page's order,
  so a page is a range scan that stops after one page (no sort step);
- the next and previous pages are keyset pages (``after``/``before``
  cursors): they start where the last page ended instead of skipping rows;
- totals come from ``VersionCount``, which database triggers keep; a search
  counts its matches up to ``SEARCH_COUNT_CAP`` through the trigram index;
- the search box is served by a trigram index (pg_trgm, SQLite FTS5).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet

from dashboard.registry.dbsql import SQLITE_SEARCH_TABLE
from dashboard.registry.models import ModelVersion, VersionCount

# sort name -> the columns that order it, each (field, descending). The last
# column makes the order total, which keyset pages need.
SORT_KEYS: dict[str, tuple[tuple[str, bool], ...]] = {
    "newest": (("created_at", True), ("id", True)),
    "oldest": (("created_at", False), ("id", False)),
    "version": (("version", False),),  # unique within a model
    "-version": (("version", True),),
    "size": (("size", False), ("id", False)),
    "-size": (("size", True), ("id", True)),
}
SORTS = {
    name: tuple(f"-{field}" if desc else field for field, desc in keys)
    for name, keys in SORT_KEYS.items()
}
# A search stops counting its matches here: the page then says "1000+".
SEARCH_COUNT_CAP = 1000
# Shorter searches cannot use a trigram index; they match so many versions
# that scanning in page order finds a page quickly.
_TRIGRAM = 3


class InvalidCursor(ValueError):
    """A page cursor that this list did not hand out (or for another sort)."""


@dataclass(frozen=True)
class Page:
    items: list[ModelVersion]
    page: int
    page_size: int
    total: int
    total_exact: bool = True
    next_cursor: str | None = None
    previous_cursor: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None


def model_list() -> list[str]:
    """Names of every model with at least one version or environment, sorted."""
    from dashboard.deployments.models import Environment

    names = set(VersionCount.objects.filter(total__gt=0).values_list("model_name", flat=True))
    names.update(Environment.objects.values_list("model_name", flat=True).distinct())
    return sorted(names)


def model_exists(*, model: str) -> bool:
    from dashboard.deployments.models import Environment

    return (
        VersionCount.objects.filter(model_name=model, total__gt=0).exists()
        or Environment.objects.filter(model_name=model).exists()
    )


def version_count(*, model: str, status: str | None = None) -> int:
    """How many versions ``model`` has (with ``status``), from the kept counts."""
    counts = VersionCount.objects.filter(model_name=model).first()
    return counts.of(status) if counts is not None else 0


def _search_ids(
    qs: QuerySet[ModelVersion], *, model: str, status: str | None, q: str, limit: int
) -> list[int]:
    """Ids of up to ``limit`` versions in ``qs`` (the filtered list) that
    match ``q``, found through the trigram index."""
    needle = q.lower()
    if connection.vendor != "sqlite" or len(needle) < _TRIGRAM:
        # PostgreSQL's planner picks the pg_trgm GIN index for LIKE '%needle%'.
        return list(qs.order_by().values_list("id", flat=True)[:limit])
    # SQLite: FTS5's trigram index answers GLOB (LIKE ... ESCAPE would scan);
    # the column is lower-case, so a lower-case GLOB is a case-insensitive
    # substring match; [*], [?] and [[] match themselves. CROSS JOIN makes
    # SQLite walk the index's matches and look each row up, rather than walk
    # every version of the model and probe the index.
    pattern = "*" + "".join(f"[{c}]" if c in "*?[" else c for c in needle) + "*"
    sql = (
        f"SELECT m.id FROM {SQLITE_SEARCH_TABLE} AS s CROSS JOIN registry_modelversion AS m "
        "ON m.id = s.rowid WHERE s.search GLOB %s AND m.model_name = %s"
    )
    params: list[Any] = [pattern, model]
    if status:
        sql += " AND m.status = %s"
        params.append(status)
    with connection.cursor() as cursor:
        cursor.execute(sql + " LIMIT %s", [*params, limit])
        return [row[0] for row in cursor.fetchall()]


def version_queryset(
    *,
    model: str,
    status: str | None = None,
    versions: list[str] | None = None,
    q: str | None = None,
    sort: str = "newest",
) -> QuerySet[ModelVersion]:
    """The model's versions matching the filters, in the order of ``sort``.

    ``q`` matches a substring of the version name, notes, author or SHA-256,
    ignoring case."""
    # Lists never show the folder's file list or the search text: not read.
    qs = ModelVersion.objects.filter(model_name=model).defer("files", "search")
    if status:
        qs = qs.filter(status=status)
    if versions is not None:
        qs = qs.filter(version__in=versions)
    if q:
        qs = qs.filter(search__contains=q.lower())
    return qs.order_by(*SORTS.get(sort, SORTS["newest"]))


# --- Cursors --------------------------------------------------------------------


def _encode_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _decode_value(field: str, value: Any) -> Any:
    if field == "created_at":
        if not isinstance(value, str):
            raise InvalidCursor("cursor is not valid")
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidCursor("cursor is not valid") from exc
        if parsed.tzinfo is None:
            raise InvalidCursor("cursor is not valid")
        return parsed
    if field in {"id", "size"}:
        # Within a 64-bit column: a database refuses (or errs on) larger numbers.
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**63:
            raise InvalidCursor("cursor is not valid")
        return value
    if not isinstance(value, str) or "\x00" in value or len(value) > 200:
        raise InvalidCursor("cursor is not valid")
    return value


def cursor_for(row: ModelVersion, sort: str) -> str:
    """An opaque cursor naming ``row``'s place in the order of ``sort``."""
    values = [_encode_value(getattr(row, field)) for field, _ in SORT_KEYS[sort]]
    raw = json.dumps([sort, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_values(cursor: str, sort: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
    except (ValueError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not valid") from exc
    keys = SORT_KEYS[sort]
    if not isinstance(document, list) or len(document) != len(keys) + 1:
        raise InvalidCursor("cursor is not valid")
    if document[0] != sort:
        raise InvalidCursor(f"cursor belongs to another sort ({document[0]!r}), not {sort!r}")
    return [
        _decode_value(field, value) for (field, _), value in zip(keys, document[1:], strict=True)
    ]


def _beyond(sort: str, values: list[Any], *, backwards: bool) -> Q:
    """Rows after ``values`` in the order of ``sort`` (before them if ``backwards``).

    Lexicographic, written so that the first column bounds an index range:
    ``a <= x AND (a < x OR b < y)`` for a descending (a, b)."""
    keys = SORT_KEYS[sort]

    def op(desc: bool, strict: bool) -> str:
        lower = desc != backwards
        return ("lt" if strict else "lte") if lower else ("gt" if strict else "gte")

    (first, first_desc), rest = keys[0], keys[1:]
    strictly = Q(**{f"{first}__{op(first_desc, True)}": values[0]})
    if not rest:
        return strictly
    (second, second_desc) = rest[0]
    return Q(**{f"{first}__{op(first_desc, False)}": values[0]}) & (
        strictly | Q(**{f"{second}__{op(second_desc, True)}": values[1]})
    )


def version_page(
    *,
    model: str,
    page: int = 1,
    page_size: int = 50,
    status: str | None = None,
    versions: list[str] | None = None,
    q: str | None = None,
    sort: str = "newest",
    after: str | None = None,
    before: str | None = None,
) -> Page:
    """One page of the model's versions (newest first by default).

    With ``after`` (or ``before``), the page right after (before) the row the
    cursor names, ``page`` being only the number to show; without either,
    page ``page`` by offset (as old API clients ask). Raises InvalidCursor.
    """
    sort = sort if sort in SORT_KEYS else "newest"
    qs = version_queryset(model=model, status=status, versions=versions, q=q, sort=sort)
    total: int | None = None
    exact = True
    if q:
        # Collect the matches through the trigram index first, up to the cap.
        # A few of them (the usual search) are then sorted outright; many are
        # dense enough that scanning in page order meets a page of them soon.
        if versions is None:
            found = _search_ids(qs, model=model, status=status, q=q, limit=SEARCH_COUNT_CAP + 1)
        else:
            found = list(qs.order_by().values_list("id", flat=True))
        total, exact = min(len(found), SEARCH_COUNT_CAP), len(found) <= SEARCH_COUNT_CAP
        if exact:
            return _page_of_few(
                found, sort=sort, page=page, page_size=page_size, after=after, before=before
            )
    if before:
        backwards = qs.filter(_beyond(sort, _cursor_values(before, sort), backwards=True))
        reversed_order = [o[1:] if o.startswith("-") else f"-{o}" for o in SORTS[sort]]
        rows = list(backwards.order_by(*reversed_order)[: page_size + 1])
        more_before = len(rows) > page_size
        items = rows[:page_size][::-1]
        more_after = True
    else:
        if after:
            qs = qs.filter(_beyond(sort, _cursor_values(after, sort), backwards=False))
            start = 0
        else:
            start = (page - 1) * page_size
        rows = list(qs[start : start + page_size + 1])
        items = rows[:page_size]
        more_after = len(rows) > page_size
        more_before = bool(after) or page > 1
    if total is None:
        total = _total(model=model, status=status, versions=versions)
    return Page(
        items=items,
        page=page,
        page_size=page_size,
        total=total,
        total_exact=exact,
        next_cursor=cursor_for(items[-1], sort) if items and more_after else None,
        previous_cursor=cursor_for(items[0], sort) if items and more_before else None,
    )


def promotable_versions(*, model: str, limit: int = 200) -> list[str]:
    """The newest valid versions of ``model`` (what the promote forms offer)."""
    return list(
        ModelVersion.objects.filter(model_name=model, status=ModelVersion.Status.VALID)
        .order_by("-created_at", "-id")
        .values_list("version", flat=True)[:limit]
    )


def _page_of_few(
    ids: list[int],
    *,
    sort: str,
    page: int,
    page_size: int,
    after: str | None,
    before: str | None,
) -> Page:
    """A page of the (at most SEARCH_COUNT_CAP) versions ``ids``, sorted here:
    a database would pick the sort's index and walk every version to find them."""
    keys = SORT_KEYS[sort]
    desc = keys[0][1]  # every column of a sort goes the same way
    keyed = sorted(
        ModelVersion.objects.filter(id__in=ids).values_list(*(f for f, _ in keys), "id"),
        key=lambda row: row[: len(keys)],
        reverse=desc,
    )

    def beyond(row: tuple[Any, ...], mark: tuple[Any, ...]) -> bool:
        return row[: len(keys)] < mark if desc else row[: len(keys)] > mark

    if before:
        mark = tuple(_cursor_values(before, sort))
        end = sum(1 for row in keyed if beyond(mark, row[: len(keys)]))
        window, more_before, more_after = (
            keyed[max(0, end - page_size) : end],
            end > page_size,
            True,
        )
    else:
        if after:
            mark = tuple(_cursor_values(after, sort))
            start = next((i for i, row in enumerate(keyed) if beyond(row, mark)), len(keyed))
        else:
            start = (page - 1) * page_size
        window = keyed[start : start + page_size]
        more_before, more_after = bool(after) or page > 1, start + page_size < len(keyed)
    rows = ModelVersion.objects.in_bulk([row[-1] for row in window])
    items = [rows[row[-1]] for row in window if row[-1] in rows]
    return Page(
        items=items,
        page=page,
        page_size=page_size,
        total=len(keyed),
        next_cursor=cursor_for(items[-1], sort) if items and more_after else None,
        previous_cursor=cursor_for(items[0], sort) if items and more_before else None,
    )


def _total(*, model: str, status: str | None, versions: list[str] | None) -> int:
    """How many versions match (without a search: searches count their own)."""
    if versions is not None:
        # At most one row per environment: counting them is cheap.
        return version_queryset(model=model, status=status, versions=versions).count()
    return version_count(model=model, status=status)


def version_get(*, model: str, version: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(model_name=model, version=version).first()


def version_as_dict(info: ModelVersion, *, environments: list[str]) -> dict[str, Any]:
    return {
        "version": info.version,
        "artifact": info.artifact,
        "format": info.format,
        "size": info.size,
        "sha256": info.sha256 or None,
        "input": (
            {"shape": info.input_shape, "dtype": info.input_dtype} if info.input_shape else None
        ),
        "status": info.status,
        "status_detail": info.status_detail,
        "validation": info.validation,
        "created_at": info.created_at,
        "created_by": info.created_by,
        "notes": info.notes,
        "metrics": info.metrics,
        "environments": environments,
    }
