"""How django-axes locks sign-ins (settings AXES_* point here).

The rule: failures are counted per client address, so whoever guesses from
one address locks out that address only. A username is locked as well only
when failures for it come from LOGIN_USERNAME_MAX_ADDRESSES different
addresses within the lockout window (a guess spread over many addresses), and
even then not for an address that signed in as that user within the last
LOGIN_KNOWN_ADDRESS_DAYS days: its owner keeps working from where they
always do. A stranger therefore can never lock someone else out from a few
addresses, and cannot lock them out of their usual address at all.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

logger = logging.getLogger("dashboard.accounts.signin")

# AccessAttempt.username is 255 characters; PostgreSQL refuses NUL in text.
_USERNAME_KEEP = 150


def failure_limit(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    return int(settings.LOGIN_MAX_FAILURES)


def cool_off(request: HttpRequest | None = None) -> dt.timedelta:
    return dt.timedelta(seconds=int(settings.LOGIN_LOCKOUT_SECONDS))


def client_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The username tried, bounded and without NUL (it is stored and logged)."""
    raw = (credentials or {}).get("username")
    if raw is None:
        raw = request.POST.get("username")
    if raw is None:
        return None
    return str(raw)[:_USERNAME_KEEP].replace("\x00", "?")


def lockout_parameters(request_or_attempt: Any, credentials: dict[str, Any] | None) -> list[Any]:
    """What the failures of this sign-in are counted by: the address, plus the
    username while a distributed guess at it is going on."""
    if not isinstance(request_or_attempt, HttpRequest):
        return ["ip_address"]  # axes asking about a stored attempt
    username = client_username(request_or_attempt, credentials)
    address = str(request_or_attempt.META.get("REMOTE_ADDR", ""))
    if username and _under_distributed_guess(username) and not _known_address(username, address):
        return ["ip_address", "username"]
    return ["ip_address"]


def _under_distributed_guess(username: str) -> bool:
    from axes.models import AccessAttempt

    since = timezone.now() - cool_off()
    addresses = (
        AccessAttempt.objects.filter(username=username, attempt_time__gte=since)
        .values("ip_address")
        .distinct()
        .count()
    )
    return addresses >= settings.LOGIN_USERNAME_MAX_ADDRESSES


def _known_address(username: str, address: str) -> bool:
    from axes.models import AccessLog

    if not address or settings.LOGIN_KNOWN_ADDRESS_DAYS <= 0:
        return False
    since = timezone.now() - dt.timedelta(days=settings.LOGIN_KNOWN_ADDRESS_DAYS)
    return AccessLog.objects.filter(
        username=username, ip_address=address, attempt_time__gte=since
    ).exists()


def client_str(
    username: str | None, ip_address: str, user_agent: str, path_info: str, request: Any
) -> str:
    """How axes names the client in its log lines: the address (what the
    lockout counts), the username tried (repr: no control characters reach the
    log) and the sign-in page."""
    if isinstance(path_info, tuple | list):
        path_info = path_info[0]
    return f"address={ip_address} username={(username or '')[:80]!r} path={path_info}"


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """The sign-in page again, with status 429 and when to try again; the
    admin's sign-in gets the same page (it is the same lockout)."""
    minutes = max(1, int(settings.LOGIN_LOCKOUT_SECONDS) // 60)
    logger.warning(
        "sign-in refused (locked out): %s",
        client_str(
            client_username(request, credentials),
            str(request.META.get("REMOTE_ADDR", "")),
            "",
            request.path,
            request,
        ),
    )
    return render(
        request,
        "accounts/login.html",
        {
            "form": AuthenticationForm(request),
            "locked": (f"Too many failed sign-ins. Try again in {minutes} minute(s)."),
            "next": request.POST.get("next", ""),
        },
        status=429,
    )
