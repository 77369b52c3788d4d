"""The version list at scale, on PostgreSQL and on SQLite: counts kept by
triggers, keyset pages, the trigram search, and query plans with an index for
every (filter, sort) the list offers.

The suite runs on PostgreSQL; ``test_the_same_rules_hold_on_sqlite`` runs this
module again in a child pytest on SQLite, since the triggers and the search
index are written once per database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.test import Client

from dashboard.registry.models import STATUSES, ModelVersion, VersionCount
from dashboard.registry.selectors import (
    SEARCH_COUNT_CAP,
    SORTS,
    InvalidCursor,
    _beyond,
    _cursor_values,
    _search_ids,
    cursor_for,
    model_list,
    version_page,
    version_queryset,
)

REPO = Path(__file__).resolve().parents[2]
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rows(model: str, count: int, **extra: Any) -> list[ModelVersion]:
    """``count`` versions with ties in created_at and size (keyset pages must
    break them by id), statuses in turn, and searchable notes."""
    made = [
        ModelVersion(
            model_name=model,
            version=f"v{i:04d}",
            created_at=BASE + dt.timedelta(hours=i // 3),
            size=1000 + i % 4,
            sha256=f"{i:064x}",
            status=STATUSES[i % 4],
            notes=f"Nightly Build {i}" + (" 100%_[x]*?" if i == 7 else ""),
            created_by="trainer",
            **extra,
        )
        for i in range(count)
    ]
    return ModelVersion.objects.bulk_create(made)


def truth() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for model, status, n in (
        ModelVersion.objects.values_list("model_name", "status").annotate(n=Count("id")).order_by()
    ):
        entry = counts.setdefault(model, {"total": 0, **dict.fromkeys(STATUSES, 0)})
        entry[status] += n
        entry["total"] += n
    return counts


def kept() -> dict[str, dict[str, int]]:
    return {
        c.model_name: {"total": c.total, **{s: c.of(s) for s in STATUSES}}
        for c in VersionCount.objects.all()
        if c.total
    }


def test_counts_follow_every_kind_of_write(db: Any) -> None:
    rows("iris", 10)
    rows("fraud", 3)
    assert kept() == truth() and kept()["iris"]["total"] == 10
    ModelVersion.objects.filter(model_name="iris", status="validating").update(status="valid")
    assert kept() == truth()
    one = ModelVersion.objects.get(model_name="iris", version="v0000")
    one.status = "invalid"
    one.save()
    one.notes = "no status change"
    one.save()
    assert kept() == truth()
    ModelVersion.objects.create(
        model_name="new-model", version="1", created_at=BASE, status="uploading"
    )
    ModelVersion.objects.filter(model_name="iris", version__in=["v0001", "v0002"]).delete()
    one.delete()
    assert kept() == truth()
    ModelVersion.objects.filter(model_name="fraud").delete()
    assert kept() == truth() and "fraud" not in kept()
    assert model_list() == ["iris", "new-model"]


def test_keyset_pages_walk_every_sort_both_ways(db: Any) -> None:
    rows("iris", 23)
    rows("other", 5)
    for sort in SORTS:
        for status in (None, "valid"):
            expected = [v.version for v in version_queryset(model="iris", status=status, sort=sort)]
            walked: list[str] = []
            page = version_page(model="iris", sort=sort, status=status, page_size=5)
            pages = [page]
            while True:
                walked += [v.version for v in page.items]
                if page.next_cursor is None:
                    break
                page = version_page(
                    model="iris", sort=sort, status=status, page_size=5, after=page.next_cursor
                )
                pages.append(page)
            assert walked == expected, (sort, status)
            assert pages[0].previous_cursor is None
            # Back from the last page to the first through `before` cursors.
            back = pages[-1]
            for earlier in reversed(pages[:-1]):
                assert back.previous_cursor is not None
                back = version_page(
                    model="iris",
                    sort=sort,
                    status=status,
                    page_size=5,
                    before=back.previous_cursor,
                )
                assert [v.version for v in back.items] == [v.version for v in earlier.items]
            assert back.previous_cursor is None


def test_offset_pages_still_work_and_totals_come_from_the_counts(db: Any) -> None:
    rows("iris", 12)
    page = version_page(model="iris", page=3, page_size=5)
    assert [v.version for v in page.items] == ["v0001", "v0000"]
    assert (page.total, page.pages, page.next_cursor) == (12, 3, None)
    assert page.previous_cursor is not None
    assert version_page(model="iris", status="valid").total == 3
    empty = version_page(model="nothing")
    assert (empty.items, empty.total, empty.next_cursor, empty.previous_cursor) == (
        [],
        0,
        None,
        None,
    )


def test_cursors_are_checked(db: Any) -> None:
    [row] = rows("iris", 1)
    import base64

    def forged(*values: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()

    for bad in (
        "garbage!",
        "W10",
        "WyJuZXdlc3QiLDFd",
        cursor_for(row, "size") + "x",
        forged("size", 10**30, 1),
        forged("size", 1, True),
        forged("version", "a\x00b"),
        forged("newest", "2026-01-01T00:00:00", 1),  # no zone
        forged("newest", "yesterday", 1),
        forged("newest", 5, 1),
        forged("oldest", None, None),
    ):
        with pytest.raises(InvalidCursor):
            version_page(model="iris", after=bad)
    with pytest.raises(InvalidCursor, match="another sort"):
        version_page(model="iris", sort="newest", after=cursor_for(row, "size"))


def test_search_is_a_case_insensitive_substring_with_literal_wildcards(db: Any) -> None:
    rows("iris", 12)
    rows("other", 12)

    def found(q: str, **kw: Any) -> list[str]:
        return [v.version for v in version_page(model="iris", q=q, page_size=100, **kw).items]

    assert found("BUILD 1") == ["v0011", "v0010", "v0001"]
    assert found("build 1", sort="oldest") == ["v0001", "v0010", "v0011"]
    assert found("build 1", status="uploading") == []
    assert found("0009") == ["v0009"]  # in the version name and the sha256
    assert found("100%_[x]*?") == ["v0007"]
    assert found("0%_") == ["v0007"]
    for literal in ("%", "_[", "*", "[x", "?"):
        assert found(literal) == ["v0007"], literal
    assert found("zzz") == []
    page = version_page(model="iris", q="build", page_size=5)
    second = version_page(model="iris", q="build", page_size=5, after=page.next_cursor)
    third = version_page(model="iris", q="build", page_size=5, after=second.next_cursor)
    walked = [v.version for p in (page, second, third) for v in p.items]
    assert walked == [f"v{i:04d}" for i in reversed(range(12))]
    assert (page.total, page.total_exact, third.next_cursor) == (12, True, None)
    back = version_page(model="iris", q="build", page_size=5, before=third.previous_cursor)
    assert back.items == second.items


def test_a_search_with_many_matches_stops_counting(db: Any) -> None:
    rows("iris", SEARCH_COUNT_CAP + 5)
    page = version_page(model="iris", q="nightly", page_size=10)
    assert (page.total, page.total_exact) == (SEARCH_COUNT_CAP, False)
    assert [v.version for v in page.items][:2] == [
        f"v{SEARCH_COUNT_CAP + 4:04d}",
        f"v{SEARCH_COUNT_CAP + 3:04d}",
    ]
    following = version_page(model="iris", q="nightly", page_size=10, after=page.next_cursor)
    assert following.items[0].version == f"v{SEARCH_COUNT_CAP - 6:04d}"


def test_versions_api_pages_by_cursor(db: Any, personas: Any) -> None:
    from tests.dashboard.factories import token_headers

    rows("iris", 7)
    client = Client()
    headers = token_headers(personas["viewer"])
    url = "/api/models/iris/versions?page_size=3"
    body = client.get(url, headers=headers).json()
    assert (body["total"], body["total_exact"], body["pages"]) == (7, True, 3)
    # The answer is written without a per-item check: it must still be the
    # documented one, field for field.
    from dashboard.registry.apis import VersionPage

    assert VersionPage.model_validate(body).model_dump(mode="json") == body
    seen = [v["version"] for v in body["items"]]
    while body["next"]:
        body = client.get(f"{url}&cursor={body['next']}", headers=headers).json()
        seen += [v["version"] for v in body["items"]]
    assert seen == [f"v{i:04d}" for i in reversed(range(7))]
    response = client.get(f"{url}&cursor=nonsense", headers=headers)
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


def test_model_page_pager_follows_cursors(db: Any, personas: Any) -> None:
    import re

    rows("iris", 120)
    client = Client()
    client.force_login(personas["viewer"])
    html = client.get("/models/iris/").content.decode()
    assert 'Versions <span class="muted">(120)</span>' in html
    assert "Page 1 of 3" in html
    older = re.search(r'href="\?([^"]*after=[^"]*)" hx-get', html)
    assert older is not None
    html = client.get("/models/iris/?" + older.group(1).replace("&amp;", "&")).content.decode()
    assert "Page 2 of 3" in html
    assert 'data-version="v0069"' in html and 'data-version="v0070"' not in html
    assert re.search(r'href="\?[^"]*page=1" hx-get', html)  # page 1 needs no cursor
    older = re.search(r'href="\?([^"]*after=[^"]*)" hx-get', html)
    assert older is not None
    html = client.get("/models/iris/?" + older.group(1).replace("&amp;", "&")).content.decode()
    assert "Page 3 of 3" in html and 'data-version="v0019"' in html
    newer = re.search(r'href="\?([^"]*before=[^"]*)" hx-get', html)
    assert newer is not None and "page=2" in newer.group(1)
    html = client.get("/models/iris/?" + newer.group(1).replace("&amp;", "&")).content.decode()
    assert "Page 2 of 3" in html and 'data-version="v0069"' in html
    # A cursor the page cannot read shows the first page, not an error.
    assert "Page 1 of 3" in client.get("/models/iris/?after=junk").content.decode()


# --- Query plans ------------------------------------------------------------------


def plan(sql: str, params: Any, *, bitmap_only: bool = False) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The test tables are tiny, where a sequential scan would always
            # win; what matters is that an index gives the order (or, for a
            # search, that a trigram index can find the rows).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"SET LOCAL enable_indexscan = {'off' if bitmap_only else 'on'}")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(str(row) for row in cursor.fetchall())


def has_sort(text: str) -> bool:
    if connection.vendor == "postgresql":
        return "Sort" in text
    return "TEMP B-TREE" in text


def test_every_first_and_keyset_page_is_an_index_range_scan(db: Any) -> None:
    rows("iris", 40)
    for sort in SORTS:
        for status in (None, "valid", "invalid"):
            qs = version_queryset(model="iris", status=status, sort=sort)
            first = list(qs[:3])
            sql, params = qs[:101].query.sql_with_params()
            text = plan(sql, params)
            assert not has_sort(text), (sort, status, text)
            mark = _cursor_values(cursor_for(first[-1], sort), sort)
            after = qs.filter(_beyond(sort, mark, backwards=False))
            sql, params = after[:101].query.sql_with_params()
            text = plan(sql, params)
            assert not has_sort(text), (sort, status, "keyset", text)


def test_search_uses_the_trigram_index(db: Any) -> None:
    rows("iris", 40)
    qs = version_queryset(model="iris", q="build 3").order_by().values_list("id", flat=True)
    if connection.vendor == "postgresql":
        # The filter the list uses (LIKE on ``search``, as Django writes it)
        # is one the trigram index answers; without the model's own filter,
        # which a tiny table would prefer, it is the only index left.
        matches = ModelVersion.objects.filter(search__contains="build 3").order_by().values("id")
        sql, params = matches.query.sql_with_params()
        assert "version_search_trgm" in plan(sql, params, bitmap_only=True)
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT sql FROM sqlite_master WHERE name LIKE '%search%'")
            assert cursor.fetchall()
        # The GLOB query _search_ids runs, walked from the FTS5 index.
        assert _search_ids(qs, model="iris", status=None, q="build 3", limit=10)
        text = plan(
            "SELECT m.id FROM registry_modelversion_search AS s CROSS JOIN "
            "registry_modelversion AS m ON m.id = s.rowid WHERE s.search GLOB %s "
            "AND m.model_name = %s LIMIT 10".replace("%s", "?"),
            ["*build 3*", "iris"],
        )
        assert "VIRTUAL TABLE INDEX" in text and "PRIMARY KEY" in text, text


@pytest.mark.skipif(
    os.environ.get("MODELDECK_SQLITE_CHILD") == "1", reason="this is the SQLite run"
)
def test_the_same_rules_hold_on_sqlite(tmp_path: Path) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("the suite already runs on SQLite")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'scale.sqlite3'}",
        "MODELDECK_SQLITE_CHILD": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-x"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
    summary = [line for line in result.stdout.splitlines() if " passed" in line]
    assert summary and json.dumps(summary)
