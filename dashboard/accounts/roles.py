"""Roles are Django groups: viewer < deployer < admin. A superuser is an admin.

A signed-in user in none of the groups has no access (an "outsider"), so
adding someone to the identity provider does not by itself show them models.
"""

from __future__ import annotations

from typing import Any

VIEWER = "viewer"
DEPLOYER = "deployer"
ADMIN = "admin"
ROLES = (VIEWER, DEPLOYER, ADMIN)
_RANK = {VIEWER: 1, DEPLOYER: 2, ADMIN: 3}


def user_role(user: Any) -> str | None:
    """The user's highest role, or None for anonymous, inactive or outsider users."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_modeldeck_role", "unset")
    if cached != "unset":
        return cached
    names = set(user.groups.values_list("name", flat=True))
    role = max((r for r in ROLES if r in names), key=_RANK.__getitem__, default=None)
    user._modeldeck_role = role
    return role


def user_has_role(user: Any, role: str) -> bool:
    """True when the user's role is ``role`` or a higher one."""
    current = user_role(user)
    return current is not None and _RANK[current] >= _RANK[role]
