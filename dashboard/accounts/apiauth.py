"""How an API request authenticates (``Authorization: Token <key>`` or the
signed-in browser session with CSRF), and ``role_auth``: the same, checking
the caller's role before anything else is read, so a caller without the role
gets 403 whatever the body holds (not a 400 about the body)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyHeader, SessionAuth
from ninja.utils import check_csrf

from dashboard.accounts.roles import user_has_role
from dashboard.accounts.services import token_authenticate


class TokenAuth(APIKeyHeader):
    """``Authorization: Token <key>`` with a key from create_api_token."""

    param_name = "Authorization"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not key:
            return None
        scheme, _, raw = key.partition(" ")
        if scheme.lower() != "token" or not raw.strip():
            return None
        user = token_authenticate(raw.strip())
        if user is not None:
            request.user = user
        return user


class BrowserSessionAuth(SessionAuth):
    """The signed-in browser session. CSRF is checked only for a request that
    carries a signed-in session, so an API client with no credentials gets a
    401 that says how to authenticate, not a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> str | None:
        key = request.COOKIES.get(self.param_name)
        if key and request.user.is_authenticated and check_csrf(request) is not None:
            raise HttpError(
                403,
                "CSRF check failed: a signed-in browser session must send the X-CSRFToken "
                "header from the dashboard's own origin (API clients use a token instead)",
            )
        return key


class _RoleTokenAuth(TokenAuth):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return _with_role(super().authenticate(request, key), self.role)


class _RoleSessionAuth(BrowserSessionAuth):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return _with_role(super().authenticate(request, key), self.role)


def _with_role(user: Any, role: str) -> Any:
    if user is not None and not user_has_role(user, role):
        raise HttpError(403, f"this needs the {role} role")
    return user


def role_auth(role: str) -> list[Any]:
    """The API's two ways in, for an operation that needs ``role``."""
    return [_RoleTokenAuth(role), _RoleSessionAuth(role)]
