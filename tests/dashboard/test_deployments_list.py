"""GET /api/deployments: the contract's deployments list, as JSON pages and
as a streamed CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from dashboard.deployments.models import Deployment, DeploymentEvent
from tests.dashboard.factories import make_environment, token_headers

pytestmark = pytest.mark.django_db


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, 0, tzinfo=dt.UTC)


def deploy(environment: Any, version: str, when: dt.datetime, **fields: Any) -> Deployment:
    user = fields.get("requested_by")
    fields.setdefault("requested_by_name", user.get_username() if user is not None else "")
    deployment = Deployment.objects.create(
        environment=environment, to_version=version, pointer={"version": version}, **fields
    )
    # created_at is auto_now_add: set the history's times afterwards.
    Deployment.objects.filter(pk=deployment.pk).update(created_at=when)
    deployment.refresh_from_db()
    return deployment


@pytest.fixture
def history(personas: Any) -> dict[str, Any]:
    staging = make_environment("iris", "staging")
    production = make_environment("iris", "production")
    fraud = make_environment("fraud", "staging")
    rows = {
        "a": deploy(staging, "1.0", at(20), status="succeeded", requested_by=personas["deployer"]),
        "b": deploy(
            production,
            "1.0",
            at(21),
            status="failed",
            requested_by=personas["admin"],
            error='=HYPERLINK("http://evil")',
            reason="@SUM(1+1)",
        ),
        "c": deploy(
            production,
            "0.9",
            at(22),
            status="rolled_back",
            kind="rollback",
            from_version="1.0",
            requested_by=personas["deployer"],
            reason='-bad, "quoted"\nsecond line',
        ),
        "d": deploy(fraud, "2.0", at(23), status="succeeded", requested_by=None),
    }
    DeploymentEvent.objects.create(deployment=rows["a"], message="started")
    DeploymentEvent.objects.create(deployment=rows["a"], message="done")
    return rows


def get(client: Client, query: str, user: Any) -> Any:
    return client.get(f"/api/deployments{query}", headers=token_headers(user))


def ids(response: Any) -> list[int]:
    return [item["id"] for item in response.json()["items"]]


def test_newest_first_and_paginated(client: Client, personas: Any, history: Any) -> None:
    response = get(client, "?page_size=3", personas["viewer"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["page"], body["page_size"], body["total"], body["pages"]) == (1, 3, 4, 2)
    assert ids(response) == [history[k].pk for k in ("d", "c", "b")]
    second = get(client, "?page_size=3&page=2", personas["viewer"])
    assert ids(second) == [history["a"].pk]
    beyond = get(client, "?page_size=3&page=9", personas["viewer"])
    assert beyond.status_code == 200 and beyond.json()["items"] == []


def test_items_are_the_deployment_as_its_own_endpoint_shows_it(
    client: Client, personas: Any, history: Any
) -> None:
    listed = get(client, "?environment=staging&model=iris", personas["viewer"]).json()["items"]
    single = client.get(
        f"/api/deployments/{history['a'].pk}", headers=token_headers(personas["viewer"])
    )
    assert single.status_code == 200
    assert listed == [single.json()]
    assert [e["message"] for e in listed[0]["events"]] == ["started", "done"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?model=iris", ["c", "b", "a"]),
        ("?model=iris&environment=production", ["c", "b"]),
        ("?environment=staging", ["d", "a"]),
        ("?kind=rollback", ["c"]),
        ("?kind=promote,rollback", ["d", "c", "b", "a"]),
        ("?status=succeeded", ["d", "a"]),
        ("?status=failed,rolled_back", ["c", "b"]),
        ("?status=awaiting_approval", []),
        ("?requested_by=deployer", ["c", "a"]),
        ("?requested_by=nobody", []),
        ("?since=2026-11-22", ["d", "c"]),
        ("?until=2026-11-21", ["b", "a"]),
        ("?since=2026-11-21T12:00:00Z&until=2026-11-22T12:00:00Z", ["c", "b"]),
        ("?since=2026-11-21T13:00:00%2B01:00&until=2026-11-21T12:00:00", ["b"]),
        ("?model=unknown-model", []),
    ],
)
def test_filters(
    client: Client, personas: Any, history: Any, query: str, expected: list[str]
) -> None:
    response = get(client, query, personas["viewer"])
    assert response.status_code == 200, response.content
    assert ids(response) == [history[k].pk for k in expected]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?model=Bad%20Name", "model"),
        ("?environment=PROD", "environment"),
        ("?kind=deploy", "kind"),
        ("?status=done", "status"),
        ("?status=failed,nope", "status"),
        ("?since=last-week", "since"),
        ("?until=2026-02-30", "until"),
        ("?since=2026-11-22&until=2026-11-21", "until"),
        ("?page=0", "page"),
        ("?page=x", "page"),
        ("?page_size=201", "page_size"),
        ("?format=xlsx", "format"),
        ("?until=9999-12-31", "until"),
        ("?since=2026-11-01T00:00:00%2B99:00", "since"),
        ("?requested_by=a%00b", "requested_by"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(
    client: Client, personas: Any, history: Any, query: str, parameter: str
) -> None:
    response = get(client, query, personas["viewer"])
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{parameter}:"), response.json()


def test_both_routes_resolve(client: Client, personas: Any, history: Any) -> None:
    headers = token_headers(personas["viewer"])
    assert client.get("/api/deployments", headers=headers).json()["total"] == 4
    assert client.get(f"/api/deployments/{history['c'].pk}", headers=headers).json()["kind"] == (
        "rollback"
    )
    assert client.get("/api/deployments/999999", headers=headers).status_code == 404
    schema = client.get("/api/schema", headers=headers).json()
    assert "/api/deployments" in schema["paths"]
    assert "/api/deployments/{deployment_id}" in schema["paths"]


@pytest.mark.parametrize(
    ("persona", "status"),
    [("outsider", 403), ("viewer", 200), ("deployer", 200), ("admin", 200), ("superuser", 200)],
)
def test_roles(client: Client, personas: Any, history: Any, persona: str, status: int) -> None:
    assert get(client, "", personas[persona]).status_code == status
    assert get(client, "?format=csv", personas[persona]).status_code == status


def test_anonymous_gets_401(client: Client, history: Any) -> None:
    assert client.get("/api/deployments").status_code == 401
    assert client.get("/api/deployments?format=csv").status_code == 401


def test_browser_session_can_download_the_csv(client: Client, personas: Any, history: Any) -> None:
    client.force_login(personas["viewer"])
    response = client.get("/api/deployments?format=csv")
    assert response.status_code == 200


def read_csv(response: Any) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_every_page_and_the_same_rows(client: Client, personas: Any, history: Any) -> None:
    response = get(client, "?format=csv&page_size=1&page=2", personas["viewer"])
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="deployments-')
    rows = read_csv(response)
    assert [int(r["id"]) for r in rows] == [history[k].pk for k in ("d", "c", "b", "a")]
    first = rows[3]
    assert (first["model"], first["environment"], first["status"], first["to_version"]) == (
        "iris",
        "staging",
        "succeeded",
        "1.0",
    )
    assert first["requested_by"] == "deployer" and first["from_version"] == ""
    assert first["created_at"] == "2026-11-20T12:00:00Z"
    assert "events" not in rows[0]
    filtered = read_csv(get(client, "?format=csv&status=rolled_back", personas["viewer"]))
    assert [int(r["id"]) for r in filtered] == [history["c"].pk]


def test_csv_cells_cannot_become_formulas(client: Client, personas: Any, history: Any) -> None:
    rows = {int(r["id"]): r for r in read_csv(get(client, "?format=csv", personas["viewer"]))}
    failed = rows[history["b"].pk]
    assert failed["error"] == '\'=HYPERLINK("http://evil")'
    assert failed["reason"] == "'@SUM(1+1)"
    rollback = rows[history["c"].pk]
    # Quotes, commas and newlines survive the CSV quoting intact.
    assert rollback["reason"] == '\'-bad, "quoted"\nsecond line'


def test_csv_streams_a_large_history_in_few_queries(
    client: Client, personas: Any, django_assert_max_num_queries: Any
) -> None:
    environment = make_environment("iris", "staging")
    Deployment.objects.bulk_create(
        [
            Deployment(environment=environment, to_version=f"1.{n}", pointer={}, status="succeeded")
            for n in range(1200)
        ]
    )
    headers = token_headers(personas["viewer"])
    response = client.get("/api/deployments?format=csv", headers=headers)
    # One cursor read in chunks, and no query per row (the event log, which
    # has no column, is not fetched at all).
    with django_assert_max_num_queries(2):
        rows = read_csv(response)
    assert len(rows) == 1200
    assert rows[0]["to_version"] == "1.1199"


def test_json_page_needs_no_query_per_row(
    client: Client, personas: Any, history: Any, django_assert_max_num_queries: Any
) -> None:
    headers = token_headers(personas["viewer"])
    with django_assert_max_num_queries(8):
        response = client.get("/api/deployments", headers=headers)
    assert response.json()["total"] == 4


def test_environment_states_cost_the_same_queries_for_2_or_12_environments(
    aws: str, personas: Any
) -> None:
    """The models page and the environments API list every environment with
    its deployment in flight, its last success and its rollback plan: a fixed
    number of queries, not three per environment."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.deployments.selectors import environment_list, environment_states

    def queries_for(model: str, count: int) -> tuple[int, list[Any]]:
        for i in range(count):
            environment = make_environment(model, f"env{i}")
            deploy(environment, "1.0", at(20), status="succeeded", rollback_pointer={"v": "0.9"})
            deploy(environment, "1.1", at(21), status="succeeded")
            if i % 2:
                deploy(environment, "1.2", at(22), status="in_progress")
        environments = list(environment_list(model=model))
        with CaptureQueriesContext(connection) as captured:
            states = environment_states(environments, with_live=False)
        return len(captured), states

    few, few_states = queries_for("small", 2)
    many, many_states = queries_for("big", 12)
    assert few == many, (few, many)
    # and the answers are each environment's own
    for state in many_states:
        assert state.deployed is not None and state.deployed.to_version == "1.1"
        assert state.deployed.environment_id == state.environment.pk
        odd = int(state.environment.name.removeprefix("env")) % 2
        assert (state.in_flight is not None) == bool(odd)
        assert state.rollback is None  # 1.1 has no rollback pointer; 1.0 did
    assert [s.deployed.to_version for s in few_states if s.deployed] == ["1.1", "1.1"]
