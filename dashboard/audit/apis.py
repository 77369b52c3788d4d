"""API: the deployments list (CONTRACT.md section 4), as JSON pages or CSV.

``GET /api/deployments/<id>`` lives in the deployments router; this one is
``GET /api/deployments`` (no trailing segment), so the two never overlap.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, Literal

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from dashboard.accounts.permissions import api_require_role
from dashboard.accounts.roles import VIEWER
from dashboard.audit.filters import (
    DeploymentFilters,
    FilterError,
    parse_choices,
    parse_name,
    parse_range,
    parse_username,
)
from dashboard.audit.selectors import (
    deployment_history_page,
    deployment_history_rows,
    deployment_kinds,
    deployment_statuses,
)
from dashboard.deployments.apis import DeploymentOut

router = Router(tags=["deployments"])

# Spreadsheets run a cell that starts with one of these as a formula
# (OWASP "CSV injection"); a leading quote makes it text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class DeploymentPage(Schema):
    items: list[DeploymentOut]
    page: int
    page_size: int
    total: int
    pages: int


class DeploymentQuery(Schema):
    model: str | None = Field(None, max_length=100)
    environment: str | None = Field(None, max_length=100)
    kind: str | None = Field(
        None, max_length=200, description="promote, rollback or auto_rollback; comma-separated"
    )
    status: str | None = Field(
        None, max_length=500, description="one status or several, comma-separated"
    )
    requested_by: str | None = Field(None, max_length=200, description="username")
    since: str | None = Field(
        None, max_length=40, description="ISO 8601 date or date-time (UTC if no zone), included"
    )
    until: str | None = Field(
        None,
        max_length=40,
        description="ISO 8601 date (the whole day) or date-time, included",
    )
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=200)
    format: Literal["json", "csv"] = Field("json", description="csv: every page, as text/csv")


def deployment_filters(params: DeploymentQuery) -> DeploymentFilters:
    """The query's filters, or the API's 400 naming the bad parameter."""
    try:
        since, until = parse_range(params.since, params.until)
        return DeploymentFilters(
            model=parse_name(params.model, parameter="model"),
            environment=parse_name(params.environment, parameter="environment"),
            kinds=parse_choices(params.kind, parameter="kind", allowed=deployment_kinds()),
            statuses=parse_choices(
                params.status, parameter="status", allowed=deployment_statuses()
            ),
            requested_by=parse_username(params.requested_by, parameter="requested_by"),
            since=since,
            until=until,
        )
    except FilterError as exc:
        raise HttpError(400, str(exc)) from None


@router.get(
    "deployments",
    response=DeploymentPage,
    url_name="deployment_list",
    summary="Deployments, newest first, paginated; format=csv streams every page as CSV",
)
def deployments(request: HttpRequest, params: Query[DeploymentQuery]) -> Any:
    api_require_role(request, VIEWER)
    filters = deployment_filters(params)
    if params.format == "csv":
        return deployments_csv_response(filters)
    page = deployment_history_page(filters=filters, page=params.page, page_size=params.page_size)
    return {
        "items": page.items,
        "page": page.page,
        "page_size": page.page_size,
        "total": page.total,
        "pages": page.pages,
    }


# --- CSV ------------------------------------------------------------------------


def csv_columns() -> list[str]:
    """The deployment dict's fields as the API documents them, minus the
    event log (a list, with no sensible cell)."""
    return [name for name in DeploymentOut.model_fields if name != "events"]


def csv_cell(value: Any) -> str:
    """A value as CSV text that a spreadsheet shows and never evaluates."""
    if value is None:
        text = ""
    elif isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    elif isinstance(value, dict | list):
        text = json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)
    else:
        text = str(value)
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


class _Line:
    """A file-like object that hands back what csv.writer writes."""

    def write(self, value: str) -> str:
        return value


def deployments_csv_lines(filters: DeploymentFilters) -> Iterator[str]:
    columns = csv_columns()
    writer = csv.writer(_Line())
    yield writer.writerow(columns)
    for row in deployment_history_rows(filters=filters):
        yield writer.writerow([csv_cell(row.get(c)) for c in columns])


def deployments_csv_response(filters: DeploymentFilters) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(
        deployments_csv_lines(filters), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="deployments-{stamp}.csv"'
    return response
