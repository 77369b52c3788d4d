"""Pages: an environment's webhooks (admins only) and their delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import ADMIN
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import environment_get
from dashboard.webhooks.models import Webhook
from dashboard.webhooks.selectors import (
    deliveries_in_flight,
    delivery_page,
    webhook_get,
    webhook_list,
)
from dashboard.webhooks.services import (
    EVENTS,
    WebhookError,
    WebhookSaved,
    webhook_create,
    webhook_delete,
    webhook_rotate_secret,
    webhook_send_test,
    webhook_update,
)

# htmx stops polling when a response has this status.
HTMX_STOP_POLLING = 286
DELIVERIES_PER_PAGE = 25


class WebhookForm(forms.Form):
    url = forms.CharField(max_length=2000, label="Receiver URL")
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENTS], widget=forms.CheckboxSelectMultiple
    )
    active = forms.BooleanField(required=False, initial=True)


def _environment_or_404(model: str, name: str) -> Environment:
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


def _webhook_or_404(environment: Environment, webhook_id: int) -> Webhook:
    webhook = webhook_get(environment=environment, webhook_id=webhook_id)
    if webhook is None:
        raise Http404(f"{environment} has no webhook #{webhook_id}")
    return webhook


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 1_000_000))
    except ValueError:
        return 1


def _render(
    request: HttpRequest,
    environment: Environment,
    *,
    form: WebhookForm | None = None,
    saved: WebhookSaved | None = None,
    status: int = 200,
) -> HttpResponse:
    page = delivery_page(
        environment=environment,
        page=_page_number(request.GET.get("page")),
        page_size=DELIVERIES_PER_PAGE,
    )
    context: dict[str, Any] = {
        "environment": environment,
        "model": environment.model_name,
        "webhooks": list(webhook_list(environment=environment)),
        "events": EVENTS,
        "form": form or WebhookForm(initial={"active": True, "events": list(EVENTS)}),
        "saved": saved,
        "deliveries": page,
        "polling": deliveries_in_flight(environment=environment),
        "max_attempts": settings.WEBHOOK_MAX_ATTEMPTS,
    }
    response = render(request, "webhooks/webhooks.html", context, status=status)
    if saved is not None and saved.secret:
        # The secret is in this page and nowhere else: keep it out of caches.
        response["Cache-Control"] = "no-store"
    return response


@role_required(ADMIN)
def webhooks_page(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    """GET: the page (or, for htmx, the delivery log). POST: add a webhook."""
    env = _environment_or_404(model, environment)
    if request.method == "GET":
        if request.headers.get("HX-Request") and request.GET.get("fragment") == "deliveries":
            in_flight = deliveries_in_flight(environment=env)
            page = delivery_page(
                environment=env,
                page=_page_number(request.GET.get("page")),
                page_size=DELIVERIES_PER_PAGE,
            )
            return render(
                request,
                "webhooks/_deliveries.html",
                {"environment": env, "deliveries": page, "polling": in_flight},
                status=200 if in_flight else HTMX_STOP_POLLING,
            )
        return _render(request, env)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    form = WebhookForm(request.POST)
    if not form.is_valid():
        return _render(request, env, form=form, status=400)
    try:
        saved = webhook_create(
            environment=env,
            url=form.cleaned_data["url"],
            events=form.cleaned_data["events"],
            active=form.cleaned_data["active"],
            actor=request.user,
        )
    except WebhookError as exc:
        form.add_error(exc.field or None, str(exc))
        return _render(request, env, form=form, status=400)
    if saved.note:
        messages.warning(request, saved.note)
    return _render(request, env, saved=saved, status=201)


@require_POST
@role_required(ADMIN)
def webhook_update_view(
    request: HttpRequest, model: str, environment: str, webhook_id: int
) -> HttpResponse:
    env = _environment_or_404(model, environment)
    webhook = _webhook_or_404(env, webhook_id)
    form = WebhookForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(
            f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items()
        )
        messages.error(request, f"Webhook #{webhook.pk} not changed: {problems}")
        return redirect("webhooks", model=model, environment=environment)
    try:
        saved = webhook_update(
            webhook=webhook,
            url=form.cleaned_data["url"],
            events=form.cleaned_data["events"],
            active=form.cleaned_data["active"],
            actor=request.user,
        )
    except WebhookError as exc:
        messages.error(request, f"Webhook #{webhook.pk} not changed: {exc}")
        return redirect("webhooks", model=model, environment=environment)
    messages.success(request, f"Saved webhook #{webhook.pk}.")
    if saved.note:
        messages.warning(request, saved.note)
    return redirect("webhooks", model=model, environment=environment)


@require_POST
@role_required(ADMIN)
def webhook_rotate_view(
    request: HttpRequest, model: str, environment: str, webhook_id: int
) -> HttpResponse:
    env = _environment_or_404(model, environment)
    saved = webhook_rotate_secret(webhook=_webhook_or_404(env, webhook_id), actor=request.user)
    return _render(request, env, saved=saved)


@require_POST
@role_required(ADMIN)
def webhook_delete_view(
    request: HttpRequest, model: str, environment: str, webhook_id: int
) -> HttpResponse:
    env = _environment_or_404(model, environment)
    webhook = _webhook_or_404(env, webhook_id)
    webhook_delete(webhook=webhook, actor=request.user)
    messages.success(request, f"Removed the webhook to {webhook.url}.")
    return redirect("webhooks", model=model, environment=environment)


@require_POST
@role_required(ADMIN)
def webhook_test_view(
    request: HttpRequest, model: str, environment: str, webhook_id: int
) -> HttpResponse:
    env = _environment_or_404(model, environment)
    delivery = webhook_send_test(webhook=_webhook_or_404(env, webhook_id))
    messages.success(
        request,
        f"Test delivery {delivery.delivery_id} queued: its attempts appear in the log below.",
    )
    return redirect("webhooks", model=model, environment=environment)
