"""Server-rendered pages: every URL walked by every persona, and the
promote form's rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from dashboard.aws import ssm
from dashboard.deployments.models import Deployment
from tests.conftest import publish
from tests.dashboard.factories import make_environment


@pytest.fixture
def registry(aws: str, db: Any, tmp_path: Path) -> dict[str, Any]:
    for version in ("1.0", "2.0"):
        publish("iris", version, tmp_path, notes=f"release {version}")
    return {"staging": make_environment("iris", "staging")}


def as_persona(personas: dict[str, Any], name: str) -> Client:
    client = Client()
    if personas[name] is not None:
        client.force_login(personas[name])
    return client


@pytest.fixture
def deployment(registry: Any, personas: Any) -> Deployment:
    return Deployment.objects.create(
        environment=registry["staging"],
        to_version="1.0",
        pointer={},
        requested_by=personas["admin"],
    )


READ_PAGES = ["/models/", "/models/iris/", "/deployments/{id}/"]
EXPECTED_READ = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 200,
    "deployer": 200,
    "admin": 200,
    "superuser": 200,
}


@pytest.mark.parametrize("persona", list(EXPECTED_READ))
@pytest.mark.parametrize("url", READ_PAGES)
def test_read_pages_by_persona(
    personas: Any, deployment: Deployment, persona: str, url: str
) -> None:
    response = as_persona(personas, persona).get(url.format(id=deployment.pk))
    assert response.status_code == EXPECTED_READ[persona]
    if persona == "anonymous":
        assert response["Location"].startswith("/login/")


EXPECTED_WRITE = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 403,
    "deployer": 302,
    "admin": 302,
    "superuser": 302,
}


@pytest.mark.parametrize("persona", list(EXPECTED_WRITE))
def test_promote_form_by_persona(personas: Any, registry: Any, persona: str) -> None:
    response = as_persona(personas, persona).post(
        "/models/iris/environments/staging/promote", {"version": "2.0", "reason": "r"}
    )
    assert response.status_code == EXPECTED_WRITE[persona]
    promoted = Deployment.objects.filter(to_version="2.0").exists()
    assert promoted == (persona in {"deployer", "admin", "superuser"})
    if promoted:
        assert response["Location"].startswith("/deployments/")


@pytest.mark.parametrize("persona", ["outsider", "viewer", "deployer", "admin"])
def test_admin_site_only_for_admins(personas: Any, db: Any, persona: str) -> None:
    response = as_persona(personas, persona).get("/admin/")
    assert (response.status_code == 200) == (persona == "admin")


def test_promote_needs_post(personas: Any, registry: Any) -> None:
    response = as_persona(personas, "deployer").get("/models/iris/environments/staging/promote")
    assert response.status_code == 405


def test_bad_promote_shows_the_reason_and_writes_nothing(personas: Any, registry: Any) -> None:
    client = as_persona(personas, "deployer")
    response = client.post(
        "/models/iris/environments/staging/promote", {"version": "../etc"}, follow=True
    )
    assert response.status_code == 200
    assert "invalid version name" in response.content.decode()
    assert not Deployment.objects.exists()
    assert ssm.get_parameter(name="/models/iris/staging") is None


def test_unknown_things_are_404(personas: Any, registry: Any) -> None:
    client = as_persona(personas, "viewer")
    assert client.get("/models/nope/").status_code == 404
    assert client.get("/models/Bad%20Name/").status_code == 404
    assert client.get("/deployments/424242/").status_code == 404
    assert client.get("/deployments/99999999999999999999/").status_code == 404
    deployer = as_persona(personas, "deployer")
    assert (
        deployer.post("/models/iris/environments/qa/promote", {"version": "1.0"}).status_code == 404
    )


def test_model_page_shows_versions_and_environment(personas: Any, registry: Any) -> None:
    make_environment("iris", "staging")
    response = as_persona(personas, "viewer").get("/models/iris/")
    html = response.content.decode()
    assert 'data-version="2.0"' in html and 'data-version="1.0"' in html
    assert "release 2.0" in html
    assert 'data-environment="staging"' in html
    assert "Promote to staging" not in html  # viewers see no promote form
    deployer_html = as_persona(personas, "deployer").get("/models/iris/").content.decode()
    assert "Promote to staging" in deployer_html


def test_deployment_panel_stops_polling_when_done(personas: Any, deployment: Deployment) -> None:
    client = as_persona(personas, "viewer")
    url = f"/deployments/{deployment.pk}/"
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    Deployment.objects.filter(pk=deployment.pk).update(status="succeeded")
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 286


def test_login_page_and_login(personas: Any, db: Any) -> None:
    client = Client()
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "viewer", "password": "pw-viewer"})
    assert response.status_code == 302
    assert client.get("/models/").status_code == 200
    bad = Client().post("/login/", {"username": "viewer", "password": "wrong"})
    assert bad.status_code == 200 and "didn't match" in bad.content.decode()


def test_static_assets_are_served_locally(client: Client, db: Any) -> None:
    response = client.get("/static/vendor/htmx/htmx.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"htmx" in body[:2000]


def test_pointer_json_matches_contract(personas: Any, registry: Any) -> None:
    from dashboard.deployments.reconciler import deployment_advance

    as_persona(personas, "deployer").post(
        "/models/iris/environments/staging/promote", {"version": "2.0"}
    )
    deployment = Deployment.objects.get()
    deployment_advance(deployment_id=deployment.pk, max_steps=1)  # writes the pointer
    pointer = json.loads(ssm.get_parameter(name="/models/iris/staging") or "")
    assert pointer == deployment.pointer
    assert set(pointer) == {
        "schema",
        "model",
        "version",
        "bucket",
        "key",
        "s3_version_id",
        "sha256",
        "size",
        "format",
        "input",
        "promoted_by",
        "promoted_at",
        "reason",
    }


def test_aws_down_is_a_clear_error_not_a_500(
    personas: Any, registry: Any, monkeypatch: Any
) -> None:
    from dashboard.aws.clients import reset_clients

    # Point the clients at a port nothing listens on: a real connection failure.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr("django.conf.settings.AWS_MAX_ATTEMPTS", 1)
    reset_clients()
    try:
        client = as_persona(personas, "deployer")
        # The versions come from the database index: the page still works and
        # says which environment's pointer could not be read.
        response = client.get("/models/iris/")
        assert response.status_code == 200
        html = response.content.decode()
        assert 'data-version="2.0"' in html and "GetParameter failed" in html
        refreshed = client.post("/models/iris/refresh", follow=True)
        assert "Could not read S3" in refreshed.content.decode()
        # A promotion is only recorded in the request (no AWS call there); its
        # first step meets the outage and retries until it gives up.
        api = client.post(
            "/api/models/iris/environments/staging/promote",
            data='{"version": "2.0"}',
            content_type="application/json",
            headers={"X-CSRFToken": "x"},
        )
        assert api.status_code == 202
        deployment = Deployment.objects.get()
        assert deployment.status == "pending" and deployment.step == "write_pointer"
    finally:
        reset_clients()
