"""Pages: an environment (state, drift, pointer history, deployments, rules),
the form posts that change it, and a deployment's live page."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import ADMIN, DEPLOYER, VIEWER, user_has_role
from dashboard.aws.errors import AwsError
from dashboard.deployments.models import Deployment, Environment
from dashboard.deployments.selectors import (
    deployment_get,
    environment_get,
    environment_history,
    environment_states,
    pointer_changes,
    user_may_decide,
    user_may_deploy,
)
from dashboard.deployments.services import (
    DeploymentError,
    deployment_abort,
    deployment_approve,
    deployment_reject,
    deployment_rollback,
    deployment_start,
    environment_rules_update,
    pointer_restore,
)

# htmx stops polling when a response has this status.
HTMX_STOP_POLLING = 286
DEPLOYMENTS_PAGE_SIZE = 25


def _environment_or_404(model: str, name: str) -> Environment:
    environment = environment_get(model=model, name=name)
    if environment is None:
        raise Http404(f"model {model!r} has no environment named {name!r}")
    return environment


def _back(request: HttpRequest, environment: Environment) -> HttpResponse:
    """Where a form post returns: the page it came from when that is ours."""
    target = request.POST.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect("environment", model=environment.model_name, environment=environment.name)


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
        return _back(request, env)
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
        return _back(request, env)
    return redirect("deployment", deployment_id=deployment.pk)


@require_POST
@role_required(DEPLOYER)
def restore_pointer(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    try:
        version = pointer_restore(environment=env, user=request.user)
    except DeploymentError as exc:
        messages.error(request, f"Could not restore the pointer of {env.name}: {exc}")
    else:
        messages.success(request, f"Restored the pointer of {env.name} (SSM version {version}).")
    return _back(request, env)


@require_POST
@role_required(DEPLOYER)
def decide(request: HttpRequest, deployment_id: int, decision: str) -> HttpResponse:
    action = {
        "approve": deployment_approve,
        "reject": deployment_reject,
        "abort": deployment_abort,
    }[decision]
    try:
        action(
            deployment_id=deployment_id, user=request.user, reason=request.POST.get("reason", "")
        )
    except DeploymentError as exc:
        messages.error(request, f"Could not {decision} deployment #{deployment_id}: {exc}")
    return redirect("deployment", deployment_id=deployment_id)


@role_required(VIEWER)
def deployment_page(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = deployment_get(deployment_id=deployment_id)
    if deployment is None:
        raise Http404(f"no deployment #{deployment_id}")
    context = {
        "deployment": deployment,
        "events": list(deployment.events.all()),
        "can_decide": user_may_decide(request.user, deployment),
        "can_abort": deployment.status in Deployment.RUNNING
        and not deployment.outcome
        and deployment.abort_requested_at is None
        and user_may_deploy(request.user, deployment.environment),
        "stages": _stages(deployment),
    }
    if request.headers.get("HX-Request"):
        status = 200 if deployment.in_flight else HTMX_STOP_POLLING
        return render(request, "deployments/_panel.html", context, status=status)
    return render(request, "deployments/deployment.html", context)


def _stages(deployment: Deployment) -> list[dict[str, str]]:
    """The progress bar: each stage done, current, failed or to come."""
    order = ["pending", "in_progress", "verifying", "baking", "succeeded"]
    labels = {
        "pending": "Queued",
        "in_progress": "Deploying",
        "verifying": "Verifying",
        "baking": "Baking",
        "succeeded": "Live",
    }
    if deployment.status == Deployment.Status.AWAITING_APPROVAL or deployment.approved_by_name:
        order.insert(0, "awaiting_approval")
        labels["awaiting_approval"] = "Approval"
    never_queued = {
        Deployment.Status.AWAITING_APPROVAL,
        Deployment.Status.REJECTED,
        Deployment.Status.EXPIRED,
    }
    reached = {
        "awaiting_approval": True,
        "pending": deployment.status not in never_queued,
        "in_progress": deployment.started_at is not None,
        "verifying": deployment.live_at is not None,
        "baking": deployment.bake_until is not None,
        "succeeded": deployment.status == Deployment.Status.SUCCEEDED,
    }
    if deployment.bake_until is None and deployment.status != Deployment.Status.BAKING:
        order.remove("baking")
    failed = deployment.status in {
        Deployment.Status.FAILED,
        Deployment.Status.ROLLED_BACK,
        Deployment.Status.REJECTED,
        Deployment.Status.EXPIRED,
    }
    # A stage is done once the next one is reached; the last one reached is
    # where the deployment is (or ended: a failure is shown in its place).
    last = max((i for i, name in enumerate(order) if reached.get(name)), default=0)
    stages = []
    for i, name in enumerate(order):
        state = "done" if i < last else "todo"
        if i == last:
            state = "done" if name == "succeeded" else ("failed" if failed else "current")
        if state == "failed":
            stages.append(
                {
                    "name": deployment.status,
                    "label": deployment.get_status_display(),
                    "state": state,
                }
            )
        else:
            stages.append({"name": name, "label": labels[name], "state": state})
    return stages


@role_required(VIEWER)
def environment_page(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    (state,) = environment_states([env])
    promotable = _promotable(model)
    if request.headers.get("HX-Request") and request.GET.get("fragment") == "card":
        # A card polls itself while its environment has a deployment in flight.
        return render(
            request,
            "deployments/_environment_card.html",
            {
                "s": state,
                "model": model,
                "can_deploy": user_may_deploy(request.user, env),
                "promotable": promotable,
            },
            status=200 if state.in_flight else HTMX_STOP_POLLING,
        )
    history: list[dict[str, object]] = []
    history_error = ""
    try:
        history = environment_history(environment=env)
    except AwsError as exc:
        history_error = f"Could not read the pointer's SSM history: {exc}"
    paginator = Paginator(env.deployments.select_related("environment"), DEPLOYMENTS_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    context = {
        "model": model,
        "environment": env,
        "s": state,
        "history": history,
        "history_error": history_error,
        "changes": list(pointer_changes(environment=env)),
        "page": page,
        "can_deploy": user_may_deploy(request.user, env),
        "is_admin": user_has_role(request.user, ADMIN),
        "promotable": promotable,
        "csv_url": "/api/deployments?"
        + urlencode({"model": model, "environment": env.name, "format": "csv"}),
    }
    return render(request, "deployments/environment.html", context)


def _promotable(model: str) -> list[str]:
    from dashboard.registry.selectors import promotable_versions

    return promotable_versions(model=model)


class RulesForm(forms.Form):
    promote_role = forms.ChoiceField(
        choices=Environment.PromoteRole.choices,
        help_text="The least role that may promote, roll back and approve.",
    )
    requires_approval = forms.BooleanField(
        required=False, help_text="A second person with the promote role approves each promotion."
    )
    approval_expiry_hours = forms.IntegerField(
        min_value=1, max_value=720, help_text="A promotion not approved by then expires."
    )
    requires_reason = forms.BooleanField(
        required=False, help_text="Promotions must say why (rollbacks always must)."
    )
    frozen = forms.BooleanField(
        required=False, help_text="Deploy freeze: promotions are refused; rollbacks still work."
    )
    freeze_reason = forms.CharField(required=False, max_length=500)


@role_required(ADMIN)
def environment_settings(request: HttpRequest, model: str, environment: str) -> HttpResponse:
    env = _environment_or_404(model, environment)
    initial = {name: getattr(env, name) for name in RulesForm.base_fields}
    form = RulesForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            changes = environment_rules_update(
                environment=env, user=request.user, **form.cleaned_data
            )
        except DeploymentError as exc:
            messages.error(request, str(exc))
        else:
            if changes:
                messages.success(
                    request, f"Saved the rules of {env.name}: changed {', '.join(changes)}."
                )
            else:
                messages.info(request, "Nothing changed.")
            return redirect("environment", model=model, environment=env.name)
    return render(
        request, "deployments/settings.html", {"model": model, "environment": env, "form": form}
    )
