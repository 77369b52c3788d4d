"""Sign-in rate limit, API tokens from the settings page and the command."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from dashboard.accounts.models import ApiToken


def test_login_is_rate_limited(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        assert client.post("/login/", {"username": "viewer", "password": "nope"}).status_code == 200
    locked = client.post("/login/", {"username": "viewer", "password": "pw-viewer"})
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    # the lock is per username and per address: another address may still not
    # guess this user's password
    other = Client(REMOTE_ADDR="10.9.9.9")
    assert other.post("/login/", {"username": "viewer", "password": "pw-viewer"}).status_code == 429
    # ...but other users are not locked out from a fresh address
    assert other.post("/login/", {"username": "admin", "password": "pw-admin"}).status_code == 302


def test_successful_login_resets_the_count(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(2):
        client.post("/login/", {"username": "viewer", "password": "nope"})
    assert (
        client.post("/login/", {"username": "viewer", "password": "pw-viewer"}).status_code == 302
    )
    for _ in range(2):
        client.post("/login/", {"username": "viewer", "password": "nope"})
    assert (
        Client().post("/login/", {"username": "viewer", "password": "pw-viewer"}).status_code == 302
    )


def test_token_shown_once_stored_hashed_and_revocable(personas: Any) -> None:
    client = Client()
    client.force_login(personas["deployer"])
    response = client.post("/settings/", {"name": "github-actions"})
    html = response.content.decode()
    token = ApiToken.objects.get(user=personas["deployer"])
    start = html.index('id="new-token-key">') + len('id="new-token-key">')
    key = html[start : html.index("<", start)]
    assert key.startswith("mdk_") and len(key) > 40
    assert key not in (token.key_hash, token.prefix) and token.prefix == key[:10]
    assert key not in client.get("/settings/").content.decode()  # shown once
    api = Client()
    assert api.get("/api/models", headers={"Authorization": f"Token {key}"}).status_code == 200
    client.post(f"/settings/tokens/{token.pk}/revoke")
    assert api.get("/api/models", headers={"Authorization": f"Token {key}"}).status_code == 401


def test_cannot_revoke_someone_elses_token(personas: Any) -> None:
    from dashboard.accounts.services import token_create

    token, _ = token_create(user=personas["admin"], name="admin's")
    client = Client()
    client.force_login(personas["deployer"])
    assert client.post(f"/settings/tokens/{token.pk}/revoke").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_token_name_is_required(personas: Any) -> None:
    client = Client()
    client.force_login(personas["viewer"])
    response = client.post("/settings/", {"name": "  "}, follow=True)
    assert "Give the token a name" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_create_api_token_command(personas: Any) -> None:
    out = StringIO()
    call_command("create_api_token", "viewer", "--name", "ci", stdout=out)
    key = out.getvalue().strip()
    assert Client().get("/api/models", headers={"Authorization": f"Token {key}"}).status_code == 200
    with pytest.raises(CommandError, match="no user named"):
        call_command("create_api_token", "ghost")
