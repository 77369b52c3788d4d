"""API tokens: creation, revocation, authentication."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from dashboard.accounts.models import ApiToken
from dashboard.accounts.roles import ROLES
from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record

KEY_PREFIX = "mdk_"
# Writing last_used_at on every call would turn each API read into a write.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _hash(key: str) -> str:
    # The key is 256 random bits, so a plain SHA-256 is enough: there is no
    # dictionary to attack, unlike with passwords.
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user: Any, name: str) -> tuple[ApiToken, str]:
    """Create a token; return it and the key, which is not stored anywhere."""
    name = name.strip()[:100] or "API token"
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=key[:10], key_hash=_hash(key))
        _audit_token(AuditEvent.Action.TOKEN_CREATE, token)
    return token, key


def token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            _audit_token(AuditEvent.Action.TOKEN_REVOKE, token)


def _audit_token(action: str, token: ApiToken) -> None:
    # Tokens are created and revoked by their owner (the settings page) or
    # for them by an operator (create_api_token): the owner is the actor.
    audit_record(
        actor=token.user,
        action=action,
        object_type="api_token",
        object_id=token.pk,
        object_repr=f"{token.name} ({token.prefix}…)",
    )


def token_authenticate(key: str) -> Any | None:
    """The active user owning the live token ``key``, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_hash(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def user_set_role(*, user: Any, role: str | None) -> None:
    """Put the user in exactly one role group (or none)."""
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    if role is not None:
        user.groups.add(Group.objects.get_or_create(name=role)[0])


def user_ensure(*, username: str, password: str, role: str, email: str = "") -> Any:
    """Create or update a user with ``role`` (used by the local stack's seed)."""
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.is_staff = role == "admin"
    user.save()
    user_set_role(user=user, role=role)
    return user
