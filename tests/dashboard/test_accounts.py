"""Sign-in lockout (django-axes), API tokens from the settings page and the command."""

from __future__ import annotations

import logging
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from dashboard.accounts.models import ApiToken
from dashboard.security import parse_networks


def sign_in(client: Client, username: str, password: str, path: str = "/login/", **extra: Any):
    return client.post(path, {"username": username, "password": password}, **extra)


def test_login_locks_the_address_not_the_account(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    stranger = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(2):
        assert sign_in(stranger, "viewer", "nope").status_code == 200
    # the failure that reaches the limit is answered with the lockout already
    assert sign_in(stranger, "viewer", "nope").status_code == 429
    locked = sign_in(stranger, "viewer", "pw-viewer")
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    # the right password does not help the locked address, for any user
    assert sign_in(stranger, "admin", "pw-admin").status_code == 429
    # ...but the stranger cannot lock the viewer out: from their own address
    # they sign in as usual
    owner = Client(REMOTE_ADDR="203.0.113.20")
    assert sign_in(owner, "viewer", "pw-viewer").status_code == 302


def test_admin_login_shares_the_lockout(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR="198.51.100.8")
    # failures on either page count together
    assert sign_in(client, "admin", "nope", "/admin/login/").status_code == 200
    assert sign_in(client, "admin", "nope", "/login/").status_code == 200
    assert sign_in(client, "admin", "nope", "/admin/login/").status_code == 429
    for path in ("/admin/login/", "/login/"):
        response = sign_in(client, "root", "pw-root", path)
        assert response.status_code == 429, path
        assert "_auth_user_id" not in client.session
    # an address with no failures still signs in to the admin
    fresh = Client(REMOTE_ADDR="203.0.113.21")
    assert sign_in(fresh, "root", "pw-root", "/admin/login/").status_code == 302


def test_own_sign_in_does_not_reset_an_address_that_guesses(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    client = Client(REMOTE_ADDR="198.51.100.9")
    for _ in range(2):
        sign_in(client, "admin", "guess")
    # the guesser signs in to their own account in between...
    assert sign_in(client, "viewer", "pw-viewer").status_code == 302
    client.logout()
    sign_in(client, "admin", "guess")
    # ...which did not wipe the count
    assert sign_in(client, "admin", "pw-admin").status_code == 429


def test_a_guess_from_many_addresses_locks_the_username_for_new_addresses_only(
    personas: Any, settings: Any
) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_USERNAME_MAX_ADDRESSES = 4
    # the deployer signed in from home once
    home = Client(REMOTE_ADDR="203.0.113.50")
    assert sign_in(home, "deployer", "pw-deployer").status_code == 302
    # one failure each from three addresses: below the bar, nothing is locked
    for n in range(3):
        sign_in(Client(REMOTE_ADDR=f"192.0.2.{n + 1}"), "deployer", "guess")
    assert sign_in(Client(REMOTE_ADDR="192.0.2.99"), "deployer", "pw-deployer").status_code == 302
    # a fourth address: now a distributed guess at this username
    sign_in(Client(REMOTE_ADDR="192.0.2.4"), "deployer", "guess")
    assert sign_in(Client(REMOTE_ADDR="192.0.2.5"), "deployer", "pw-deployer").status_code == 429
    # other users are not affected, and the owner still gets in from home
    assert sign_in(Client(REMOTE_ADDR="192.0.2.6"), "viewer", "pw-viewer").status_code == 302
    assert sign_in(Client(REMOTE_ADDR="203.0.113.50"), "deployer", "pw-deployer").status_code == 302


def test_forwarded_for_counts_the_right_most_untrusted_hop(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    settings.TRUSTED_PROXY_NETWORKS = parse_networks(["10.0.0.0/8"])
    # Through the proxy: the client forges a different left-most hop every
    # time, but the hop the proxy appended is what counts.
    via_proxy = Client(REMOTE_ADDR="10.1.2.3")
    for n in range(3):
        sign_in(via_proxy, "viewer", "nope", HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 198.51.100.30")
    forged = "8.8.8.8, 198.51.100.30"
    locked = sign_in(via_proxy, "viewer", "pw-viewer", HTTP_X_FORWARDED_FOR=forged)
    assert locked.status_code == 429
    # another client behind the same proxy is not affected
    ok = sign_in(via_proxy, "viewer", "pw-viewer", HTTP_X_FORWARDED_FOR="198.51.100.31")
    assert ok.status_code == 302


def test_forwarded_for_from_an_untrusted_peer_is_ignored(personas: Any, settings: Any) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    settings.TRUSTED_PROXY_NETWORKS = parse_networks(["10.0.0.0/8"])
    direct = Client(REMOTE_ADDR="198.51.100.40")
    for n in range(3):
        sign_in(direct, "viewer", "nope", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    # rotating a forged header does not give a fresh address
    locked = sign_in(direct, "viewer", "pw-viewer", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert locked.status_code == 429


def test_failures_and_lockouts_are_logged(
    personas: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.LOGIN_MAX_FAILURES = 2
    client = Client(REMOTE_ADDR="198.51.100.60")
    with caplog.at_level(logging.INFO):
        sign_in(client, "admin\x1b[2J", "nope", "/admin/login/")
        sign_in(client, "admin", "nope")
        sign_in(client, "admin", "pw-admin")
    lines = [r.getMessage() for r in caplog.records]
    failures = [line for line in lines if "login failure" in line]
    assert any("address=198.51.100.60" in ln and "path=/admin/login/" in ln for ln in failures)
    # the username is logged as a repr: no terminal escape reaches the log
    assert not any("\x1b" in line for line in lines)
    assert any("sign-in refused (locked out)" in line and "198.51.100.60" in line for line in lines)


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
