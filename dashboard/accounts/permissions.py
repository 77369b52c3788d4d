"""Role checks shared by the pages and the API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja.errors import HttpError

from dashboard.accounts.roles import user_has_role

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])


def api_require_role(request: HttpRequest, role: str) -> None:
    """Raise the API's 403 unless the caller has ``role`` or a higher one."""
    if not user_has_role(request.user, role):
        raise HttpError(403, f"this needs the {role} role")


def role_required(role: str) -> Callable[[ViewFunc], ViewFunc]:
    """Page decorator: anonymous users go to the login page, signed-in users
    without ``role`` get a 403 page that says which role is needed."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not user_has_role(request.user, role):
                return render(
                    request,
                    "403.html",
                    {"message": f"This page needs the {role} role. Ask an admin for access."},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
