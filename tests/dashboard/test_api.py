"""The HTTP API: reads, promote's validation and concurrency rules, auth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from dashboard.aws import ssm
from dashboard.deployments.models import Deployment
from tests.conftest import publish
from tests.dashboard.factories import make_environment, token_headers


@pytest.fixture
def registry(aws: str, db: Any, tmp_path: Path) -> dict[str, Any]:
    for version in ("1.0", "1.1", "2.0"):
        publish("iris", version, tmp_path, metrics={"accuracy": 0.9})
    staging = make_environment("iris", "staging", position=0)
    production = make_environment("iris", "production", position=1, promote_role="admin")
    return {"staging": staging, "production": production}


def call(client: Client, method: str, path: str, user: Any = None, body: Any = None) -> Any:
    headers = token_headers(user) if user is not None else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["data"] = body if isinstance(body, str) else json.dumps(body)
        kwargs["content_type"] = "application/json"
    return getattr(client, method)(path, **kwargs)


def test_models_lists_model_with_environments(client: Client, registry: Any, personas: Any) -> None:
    response = call(client, "get", "/api/models", personas["viewer"])
    assert response.status_code == 200
    [model] = response.json()
    assert model["name"] == "iris"
    assert [e["name"] for e in model["environments"]] == ["staging", "production"]


def test_versions_newest_first_and_paginated(client: Client, registry: Any, personas: Any) -> None:
    response = call(client, "get", "/api/models/iris/versions?page_size=2", personas["viewer"])
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["pages"]) == (3, 2)
    assert [v["version"] for v in body["items"]] == ["2.0", "1.1"]
    first = body["items"][0]
    assert first["status"] == "valid" and len(first["sha256"]) == 64
    assert first["input"] == {"shape": [4], "dtype": "float32"}
    page2 = call(client, "get", "/api/models/iris/versions?page_size=2&page=2", personas["viewer"])
    assert [v["version"] for v in page2.json()["items"]] == ["1.0"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/models/Bad%20Name/versions", 400),
        ("/api/models/nope/versions", 404),
        ("/api/models/iris/versions?page=0", 400),
        ("/api/models/iris/versions?page_size=100000", 400),
        ("/api/models/iris/versions?page=abc", 400),
        ("/api/models/nope/environments", 404),
        ("/api/deployments/999999", 404),
        ("/api/deployments/99999999999999999999999", 404),
    ],
)
def test_bad_reads_get_clear_4xx(
    client: Client, registry: Any, personas: Any, path: str, status: int
) -> None:
    response = call(client, "get", path, personas["viewer"])
    assert response.status_code == status, response.content
    assert response.json()["detail"]


def test_promote_records_the_deployment_and_leaves_the_pointer_to_the_worker(
    client: Client, registry: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = call(
            client,
            "post",
            "/api/models/iris/environments/staging/promote",
            personas["deployer"],
            {"version": "1.1", "reason": "better recall"},
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["to_version"], body["status"], body["kind"]) == ("1.1", "pending", "promote")
    assert body["requested_by"] == "deployer" and body["reason"] == "better recall"
    assert len(callbacks) == 1  # the worker is enqueued only once the row is committed
    # Nothing is written to SSM in the request: the first step does it.
    assert ssm.get_parameter(name="/models/iris/staging") is None
    pointer = Deployment.objects.get(pk=body["id"]).pointer
    assert pointer["version"] == "1.1" and pointer["model"] == "iris"
    assert pointer["key"] == "models/iris/1.1/model.pt" and pointer["s3_version_id"]
    assert pointer["promoted_by"] == "deployer" and len(pointer["sha256"]) == 64
    assert body["to_sha256"] == pointer["sha256"]


def test_second_promote_while_in_flight_is_409(
    client: Client, registry: Any, personas: Any
) -> None:
    path = "/api/models/iris/environments/staging/promote"
    assert call(client, "post", path, personas["deployer"], {"version": "1.1"}).status_code == 202
    response = call(client, "post", path, personas["deployer"], {"version": "2.0"})
    assert response.status_code == 409
    assert "in flight" in response.json()["detail"]
    assert Deployment.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"version": "9.9"}, 400, "does not exist"),
        ({"version": "../1.0"}, 400, "invalid version name"),
        ({"version": "x" * 150}, 400, "invalid version name"),
        ({"version": ""}, 400, "version"),
        ({}, 400, "version"),
        ({"version": 5}, 400, "version"),
        ({"version": "1.0", "reason": "r" * 501}, 400, "reason"),
        ("{not json", 400, ""),
        ([1, 2], 400, ""),
    ],
)
def test_bad_promote_is_rejected_and_writes_nothing(
    client: Client, registry: Any, personas: Any, body: Any, status: int, needle: str
) -> None:
    response = call(
        client, "post", "/api/models/iris/environments/staging/promote", personas["deployer"], body
    )
    assert response.status_code == status, response.content
    assert needle in response.json()["detail"]
    assert not Deployment.objects.exists()
    assert ssm.get_parameter(name="/models/iris/staging") is None


@pytest.mark.parametrize("status", ["invalid", "validating", "uploading"])
def test_promote_needs_a_valid_version(
    client: Client, registry: Any, personas: Any, tmp_path: Path, status: str
) -> None:
    publish("iris", f"3.0-{status}", tmp_path, status=status)
    response = call(
        client,
        "post",
        "/api/models/iris/environments/staging/promote",
        personas["deployer"],
        {"version": f"3.0-{status}"},
    )
    assert response.status_code == 400
    assert f"is {status}" in response.json()["detail"]
    assert "only valid versions" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/models/nope/environments/staging/promote", 404),
        ("/api/models/iris/environments/qa/promote", 404),
        ("/api/models/iris/environments/BAD/promote", 400),
    ],
)
def test_promote_to_unknown_places(
    client: Client, registry: Any, personas: Any, path: str, status: int
) -> None:
    response = call(client, "post", path, personas["deployer"], {"version": "1.0"})
    assert response.status_code == status


@pytest.mark.parametrize(
    ("persona", "environment", "status"),
    [
        ("anonymous", "staging", 401),
        ("outsider", "staging", 403),
        ("viewer", "staging", 403),
        ("deployer", "staging", 202),
        ("deployer", "production", 403),  # production requires admin
        ("admin", "production", 202),
        ("superuser", "production", 202),
    ],
)
def test_promote_permissions(
    client: Client, registry: Any, personas: Any, persona: str, environment: str, status: int
) -> None:
    response = call(
        client,
        "post",
        f"/api/models/iris/environments/{environment}/promote",
        personas[persona],
        {"version": "1.0"},
    )
    assert response.status_code == status, response.content


def test_revoked_or_bogus_token_is_401(client: Client, registry: Any, personas: Any) -> None:
    from dashboard.accounts.models import ApiToken
    from dashboard.accounts.services import token_create, token_revoke

    token, key = token_create(user=personas["admin"], name="ci")
    assert client.get("/api/models", headers={"Authorization": f"Token {key}"}).status_code == 200
    token_revoke(token=ApiToken.objects.get(pk=token.pk))
    assert client.get("/api/models", headers={"Authorization": f"Token {key}"}).status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Token mdk_nope"}).status_code == 401
    assert client.get("/api/models", headers={"Authorization": "Bearer x"}).status_code == 401


def test_session_auth_needs_csrf(registry: Any, personas: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["deployer"])
    assert client.get("/api/models").status_code == 200
    response = client.post(
        "/api/models/iris/environments/staging/promote",
        data=json.dumps({"version": "1.0"}),
        content_type="application/json",
    )
    assert response.status_code in (401, 403)
    assert not Deployment.objects.exists()


def test_rollback_without_history_is_400(client: Client, registry: Any, personas: Any) -> None:
    response = call(
        client,
        "post",
        "/api/models/iris/environments/staging/rollback",
        personas["deployer"],
        {"reason": "bad"},
    )
    assert response.status_code == 400
    assert "nothing earlier to roll back to" in response.json()["detail"]


def test_schema_is_served(client: Client, personas: Any, db: Any) -> None:
    client.force_login(personas["viewer"])
    response = client.get("/api/schema")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/models/{model}/environments/{environment}/promote" in paths
    assert "/api/deployments/{deployment_id}" in paths


@pytest.mark.parametrize("path", ["/api/schema", "/api/docs"])
def test_api_docs_need_a_session_or_a_token(client: Client, personas: Any, path: str) -> None:
    from tests.dashboard.factories import token_headers

    anonymous = client.get(path)
    assert anonymous.status_code == 401
    assert "paths" not in anonymous.content.decode()
    # a browser with no session is sent to sign in
    browser = client.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 302 and browser["Location"].startswith("/login/?next=")
    assert client.get(path, headers={"Authorization": "Token mdk_wrong"}).status_code == 401
    # a signed-in user with no role sees nothing either
    client.force_login(personas["outsider"])
    assert client.get(path).status_code == 403
    client.logout()
    assert client.get(path, headers=token_headers(personas["viewer"])).status_code == 200
    client.force_login(personas["viewer"])
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/api/nope", 404),
        ("get", "/api/models/..%2F..%2Fetc/versions", 404),
        ("put", "/api/models/iris/environments/staging/promote", 405),
        ("delete", "/api/models", 405),
    ],
)
def test_api_errors_are_json(
    client: Client, registry: Any, personas: Any, method: str, path: str, status: int
) -> None:
    response = call(client, method, path, personas["viewer"])
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


@pytest.mark.parametrize("body", ["", "[1, 2]", "null", '"x"'])
def test_body_that_is_not_an_object(
    client: Client, registry: Any, personas: Any, body: str
) -> None:
    response = call(
        client,
        "post",
        "/api/models/iris/environments/staging/promote",
        personas["deployer"],
        body or "{}",
    )
    if body == "":
        # an empty object: the version is what is missing
        assert response.status_code == 400 and "version" in response.json()["detail"]
    else:
        assert response.status_code == 400
        assert response.json()["detail"] == "the request body must be a JSON object"


@pytest.mark.parametrize("body", ["", "{}", '{"reason": "  "}'])
def test_rollback_needs_a_reason(client: Client, registry: Any, personas: Any, body: str) -> None:
    response = client.post(
        "/api/models/iris/environments/staging/rollback",
        data=body,
        content_type="application/json",
        headers=token_headers(personas["deployer"]),
    )
    assert response.status_code == 400
    assert "needs a reason" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/models/iris/environments/staging/promote"),
        ("post", "/api/models/iris/environments/staging/rollback"),
        ("post", "/api/deployments/1/approve"),
        ("post", "/api/deployments/1/reject"),
        ("post", "/api/deployments/1/abort"),
        ("post", "/api/models/iris/uploads"),
        ("post", "/api/models/iris/uploads/abc/complete"),
        ("delete", "/api/models/iris/uploads/abc"),
    ],
)
def test_a_viewer_gets_403_before_the_body_is_read(
    client: Client, registry: Any, personas: Any, method: str, path: str
) -> None:
    """Found by QA: a viewer sending a bad body got a 400 about the body."""
    viewer = token_headers(personas["viewer"])
    deployer = token_headers(personas["deployer"])
    answer = getattr(client, method)(
        path, data="{}", content_type="application/json", headers=viewer
    )
    assert answer.status_code == 403, answer.content
    assert answer.json()["detail"] == "this needs the deployer role"
    assert (
        getattr(client, method)(path, data="{}", content_type="application/json").status_code == 401
    )
    # a deployer with the same bad body is told about the body (or the missing thing)
    assert getattr(client, method)(
        path, data="{}", content_type="application/json", headers=deployer
    ).status_code in {400, 404, 409}
