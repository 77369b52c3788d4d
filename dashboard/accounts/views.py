"""Pages: sign-in (locked out by django-axes) and the user's settings (API tokens)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.models import ApiToken
from dashboard.accounts.services import token_create, token_revoke


class LoginView(auth_views.LoginView):
    """Django's sign-in page. Failed attempts are counted and locked out by
    django-axes (its backend and middleware, settings AXES_*), which covers
    every sign-in that goes through authenticate(), /admin/login/ included."""

    template_name = "accounts/login.html"


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
