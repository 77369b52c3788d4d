"""Pages: promote / roll back (form posts) and a deployment's live page."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import DEPLOYER, VIEWER
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import deployment_get, environment_get
from dashboard.deployments.services import DeploymentError, deployment_rollback, deployment_start

# htmx stops polling when a response has this status.
HTMX_STOP_POLLING = 286


def _environment_or_404(model: str, name: str) -> Environment:
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


@require_POST
@role_required(DEPLOYER)
def promote(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    try:
        deployment = deployment_start(
            environment=env,
            version=request.POST.get("version", ""),
            user=request.user,
            reason=request.POST.get("reason", ""),
        )
    except DeploymentError as exc:
        messages.error(request, f"Could not promote to {env.name}: {exc}")
        return redirect("model", model=model)
    return redirect("deployment", deployment_id=deployment.pk)


@require_POST
@role_required(DEPLOYER)
def rollback(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    try:
        deployment = deployment_rollback(
            environment=env, user=request.user, reason=request.POST.get("reason", "")
        )
    except DeploymentError as exc:
        messages.error(request, f"Could not roll back {env.name}: {exc}")
        return redirect("model", model=model)
    return redirect("deployment", deployment_id=deployment.pk)


@role_required(VIEWER)
def deployment_page(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = deployment_get(deployment_id=deployment_id)
    if deployment is None:
        raise Http404(f"no deployment #{deployment_id}")
    context = {"deployment": deployment, "events": list(deployment.events.all())}
    if request.headers.get("HX-Request"):
        status = 200 if deployment.in_flight else HTMX_STOP_POLLING
        return render(request, "deployments/_panel.html", context, status=status)
    return render(request, "deployments/deployment.html", context)
