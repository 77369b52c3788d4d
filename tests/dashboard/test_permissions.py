"""Every page URL, walked by every persona: the answer each role gets.

anonymous -> sign-in redirect; outsider (signed in, no role) -> 403 on
everything but their own settings; viewer reads (the audit history too);
deployer also uploads, promotes, rolls back, refreshes and deletes; admin
also the admin pages and the environments' webhooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from dashboard.deployments.models import Deployment
from dashboard.webhooks.services import webhook_create
from tests.conftest import publish
from tests.dashboard.factories import make_environment

PERSONAS = ["anonymous", "outsider", "viewer", "deployer", "admin", "superuser"]
READ = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 200,
    "deployer": 200,
    "admin": 200,
    "superuser": 200,
}
DEPLOY_GET = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 403,
    "deployer": 200,
    "admin": 200,
    "superuser": 200,
}
DEPLOY_POST = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 403,
    "deployer": 302,
    "admin": 302,
    "superuser": 302,
}
SIGNED_IN = {
    "anonymous": 302,
    "outsider": 200,
    "viewer": 200,
    "deployer": 200,
    "admin": 200,
    "superuser": 200,
}
ADMIN = {
    "anonymous": 302,
    "outsider": 302,
    "viewer": 302,
    "deployer": 302,
    "admin": 200,
    "superuser": 200,
}

ADMIN_ROLE_GET = {
    "anonymous": 302,
    "outsider": 403,
    "viewer": 403,
    "deployer": 403,
    "admin": 200,
    "superuser": 200,
}


def admin_only(allowed: int) -> dict[str, int]:
    """A dashboard page for the admin role: ``allowed`` is what admins get."""
    return {
        "anonymous": 302,
        "outsider": 403,
        "viewer": 403,
        "deployer": 403,
        "admin": allowed,
        "superuser": allowed,
    }


WEBHOOKS = "/models/iris/environments/staging/webhooks/"

URLS = [
    ("get", "/models/", READ),
    ("get", "/models/iris/", READ),
    ("get", "/models/iris/versions/1.0/", READ),
    ("get", "/deployments/{deployment}/", READ),
    ("get", "/models/iris/upload/", DEPLOY_GET),
    ("get", "/upload/", DEPLOY_GET),
    ("post", "/models/iris/refresh", DEPLOY_POST),
    ("post", "/models/iris/environments/staging/promote", DEPLOY_POST),
    ("post", "/models/iris/environments/staging/rollback", DEPLOY_POST),
    ("get", "/models/iris/environments/staging/", READ),
    ("get", "/models/iris/environments/staging/settings/", ADMIN_ROLE_GET),
    ("post", "/models/iris/environments/staging/settings/", ADMIN_ROLE_GET),
    ("post", "/models/iris/environments/staging/restore-pointer", DEPLOY_POST),
    ("post", "/deployments/{deployment}/approve", DEPLOY_POST),
    ("post", "/deployments/{deployment}/reject", DEPLOY_POST),
    ("post", "/deployments/{deployment}/abort", DEPLOY_POST),
    ("post", "/models/iris/versions/2.0/delete", DEPLOY_POST),
    ("get", "/settings/", SIGNED_IN),
    ("get", "/admin/", ADMIN),
    ("get", "/admin/deployments/environment/", ADMIN),
    ("get", "/audit/", READ),
    ("get", "/audit/?action=promote&since=2026-01-01", READ),
    ("get", WEBHOOKS, admin_only(200)),
    # The generic POST body is not a webhook: admins get the form back (400).
    ("post", WEBHOOKS, admin_only(400)),
    ("post", WEBHOOKS + "{webhook}/update", admin_only(302)),
    ("post", WEBHOOKS + "{webhook}/rotate", admin_only(200)),
    ("post", WEBHOOKS + "{webhook}/test", admin_only(302)),
    ("post", WEBHOOKS + "{webhook}/delete", admin_only(302)),
]


@pytest.fixture
def world(aws: str, db: Any, tmp_path: Path, personas: Any) -> dict[str, Any]:
    for version in ("1.0", "2.0"):
        publish("iris", version, tmp_path)
    environment = make_environment("iris", "staging")
    deployment = Deployment.objects.create(
        environment=environment, to_version="1.0", pointer={}, status="succeeded"
    )
    webhook = webhook_create(
        environment=environment, url="http://10.0.0.1/hook", events=["drift.detected"], actor=None
    ).webhook
    return {"deployment": deployment.pk, "webhook": webhook.pk}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("method", "url", "expected"), URLS, ids=[f"{m} {u}" for m, u, _ in URLS])
def test_every_url_by_persona(
    world: dict[str, Any],
    personas: Any,
    persona: str,
    method: str,
    url: str,
    expected: dict[str, int],
) -> None:
    client = Client()
    if personas[persona] is not None:
        client.force_login(personas[persona])
    data = {"version": "1.0", "confirm": "nope"} if method == "post" else None
    response = getattr(client, method)(url.format(**world), data)
    assert response.status_code == expected[persona], (persona, url, response.status_code)
    if expected[persona] == 302 and persona == "anonymous":
        assert "/login/" in response["Location"]


def test_every_page_url_is_walked() -> None:
    """A new page must be added to URLS above (with what each role gets)."""
    import re
    from collections import defaultdict

    from django.urls import URLPattern, get_resolver

    walked = [url.format_map(defaultdict(lambda: "1")) for _, url, _ in URLS]
    missing = []
    for pattern in get_resolver().url_patterns:
        if not isinstance(pattern, URLPattern) or pattern.name in {
            "login",
            "logout",
            "token-revoke",
        }:
            continue
        route = str(pattern.pattern)
        if route in {"", "healthz"}:
            continue
        regex = "/" + re.sub(r"<[^>]+>", "[^/]+", route)
        if not any(re.fullmatch(regex, url) for url in walked):
            missing.append(route)
    assert missing == []
