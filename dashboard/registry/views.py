"""Pages: the model list and a model's page (environments + versions)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import VIEWER
from dashboard.aws.errors import AwsError
from dashboard.deployments.models import Environment
from dashboard.deployments.selectors import deployment_list, environment_list, environment_states
from dashboard.registry.names import InvalidName, validate_model_name
from dashboard.registry.selectors import model_exists, model_list, version_page

PAGE_SIZE = 25


@role_required(VIEWER)
def models_page(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        names = set(model_list())
    except AwsError as exc:
        names, error = set(), f"Could not list the models in S3: {exc}"
    names.update(Environment.objects.values_list("model_name", flat=True).distinct())
    rows = [
        {"name": name, "environments": environment_states(list(environment_list(model=name)))}
        for name in sorted(names)
    ]
    return render(request, "registry/models.html", {"rows": rows, "error": error})


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 1_000_000))
    except ValueError:
        return 1


@role_required(VIEWER)
def model_page(request: HttpRequest, model: str) -> HttpResponse:
    try:
        validate_model_name(model)
    except InvalidName as exc:
        raise Http404(str(exc)) from exc
    try:
        return _model_page(request, model)
    except AwsError as exc:
        return render(
            request,
            "problem.html",
            {"title": "AWS is not answering", "message": f"Could not read {model}: {exc}"},
            status=503 if exc.transient else 502,
        )


def _model_page(request: HttpRequest, model: str) -> HttpResponse:
    environments = list(environment_list(model=model))
    if not environments and not model_exists(model=model):
        raise Http404(f"no model named {model!r}")
    states = environment_states(environments)
    serving: dict[str, list[str]] = {}
    for state in states:
        if state.promoted_version:
            serving.setdefault(state.promoted_version, []).append(state.environment.name)
    page = version_page(
        model=model, page=_page_number(request.GET.get("page")), page_size=PAGE_SIZE
    )
    context = {
        "model": model,
        "states": states,
        "page": page,
        "versions": [(v, serving.get(v.version, [])) for v in page.items],
        "promotable": [v.version for v in page.items if v.promotable],
        "deployments": deployment_list(model=model, limit=10),
    }
    if request.headers.get("HX-Request") and request.GET.get("fragment") == "environments":
        return render(request, "registry/_environments.html", context)
    return render(request, "registry/model.html", context)
