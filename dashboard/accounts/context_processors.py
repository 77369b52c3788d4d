from typing import Any

from django.http import HttpRequest

from dashboard.accounts.roles import ADMIN, DEPLOYER, user_has_role, user_role


def roles(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {
        "user_role": user_role(user),
        "can_deploy": user_has_role(user, DEPLOYER),
        "is_admin": user_has_role(user, ADMIN),
    }
