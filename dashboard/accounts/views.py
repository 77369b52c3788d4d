"""Pages: sign-in (rate-limited) and the user's settings (API tokens)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.models import ApiToken
from dashboard.accounts.services import token_create, token_revoke

logger = logging.getLogger(__name__)


def _client_ip(request: HttpRequest) -> str:
    # Behind a proxy (App Runner, a load balancer) the client is the first
    # X-Forwarded-For hop; only trusted when configured.
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return str(request.META.get("REMOTE_ADDR", ""))


class RateLimitedLoginView(auth_views.LoginView):
    """Django's login, refusing further attempts for a while after
    LOGIN_MAX_FAILURES failures from one address or for one username."""

    template_name = "accounts/login.html"

    def _keys(self) -> list[str]:
        username = str(self.request.POST.get("username", "")).strip().lower()[:150]
        return [f"login-fail:ip:{_client_ip(self.request)}", f"login-fail:user:{username}"]

    def _failures(self) -> int:
        try:
            return max(int(cache.get(key) or 0) for key in self._keys())
        except Exception:  # the cache (Redis) is down: don't lock everyone out
            logger.warning("login rate limit unavailable", exc_info=True)
            return 0

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self._failures() >= settings.LOGIN_MAX_FAILURES:
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            form = self.get_form()
            return render(
                request,
                self.template_name,
                {
                    "form": form,
                    "locked": f"Too many failed sign-ins. Try again in {minutes} minute(s).",
                },
                status=429,
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        for key in self._keys():
            try:
                cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
                cache.incr(key)
            except Exception:
                logger.warning("login rate limit unavailable", exc_info=True)
        return super().form_invalid(form)

    def form_valid(self, form: Any) -> HttpResponse:
        try:
            cache.delete_many(self._keys())
        except Exception:
            logger.warning("login rate limit unavailable", exc_info=True)
        return super().form_valid(form)


@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        name = str(request.POST.get("name", "")).strip()
        if not name or len(name) > 100:
            messages.error(request, "Give the token a name of 1 to 100 characters.")
        else:
            _, new_key = token_create(user=request.user, name=name)
    tokens = ApiToken.objects.filter(user_id=int(request.user.pk or 0))
    return render(request, "accounts/settings.html", {"tokens": tokens, "new_key": new_key})


@require_POST
@login_required
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=token_id, user_id=int(request.user.pk or 0)).first()
    if token is None:
        raise Http404("no such token of yours")
    token_revoke(token=token)
    messages.success(request, f"Revoked {token.name}.")
    return redirect("settings")
