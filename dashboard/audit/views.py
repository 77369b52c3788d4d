"""Page: the audit history, filterable and paged."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.accounts.permissions import role_required
from dashboard.accounts.roles import VIEWER
from dashboard.audit.filters import (
    AuditFilters,
    FilterError,
    parse_choices,
    parse_name,
    parse_range,
    parse_username,
)
from dashboard.audit.models import AuditEvent
from dashboard.audit.selectors import audit_actor_names, audit_event_page, audit_model_names

PAGE_SIZE = 50
# The query-string names the page accepts, in the order links rebuild them.
FILTER_PARAMETERS = ("action", "model", "environment", "version", "user", "since", "until")
# Deployment filters of GET /api/deployments that mean the same as the page's.
_CSV_PARAMETERS = {
    "model": "model",
    "environment": "environment",
    "user": "requested_by",
    "since": "since",
    "until": "until",
}


def _page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), 1_000_000))
    except ValueError:
        return 1


def _filters(raw: dict[str, str]) -> AuditFilters:
    since, until = parse_range(raw.get("since"), raw.get("until"))
    deployment = raw.get("deployment", "")
    if deployment and not (deployment.isdigit() and len(deployment) <= 18):
        raise FilterError("deployment", "must be a deployment number")
    return AuditFilters(
        actions=parse_choices(
            raw.get("action"), parameter="action", allowed=AuditEvent.Action.values
        ),
        model=parse_name(raw.get("model"), parameter="model"),
        environment=parse_name(raw.get("environment"), parameter="environment"),
        version=parse_name(raw.get("version"), parameter="version"),
        user=parse_username(raw.get("user"), parameter="user"),
        since=since,
        until=until,
        deployment=int(deployment) if deployment else None,
    )


@role_required(VIEWER)
def audit_page(request: HttpRequest) -> HttpResponse:
    raw = {
        k: str(request.GET.get(k, "")).strip()
        for k in (*FILTER_PARAMETERS, "deployment")
        if request.GET.get(k, "").strip()
    }
    context: dict[str, object] = {
        "raw": raw,
        "actions": AuditEvent.Action.choices,
        "actor_names": audit_actor_names(),
        "model_names": audit_model_names(),
        "filter_query": urlencode(raw),
        "csv_query": urlencode(
            {_CSV_PARAMETERS[k]: v for k, v in raw.items() if k in _CSV_PARAMETERS}
        ),
    }
    try:
        filters = _filters(raw)
    except FilterError as exc:
        # Show the form with the problem rather than a history that silently
        # ignores the filter.
        context.update({"error": exc, "page": None})
        return render(request, "audit/audit.html", context, status=400)
    page = audit_event_page(
        filters=filters, page=_page_number(request.GET.get("page")), page_size=PAGE_SIZE
    )
    context["page"] = page
    return render(request, "audit/audit.html", context)
