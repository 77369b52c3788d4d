"""Reads of the audit history and of the deployments list (the contract's
``GET /api/deployments``). Each page is one indexed query plus a count."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db.models import Prefetch, QuerySet

from dashboard.audit.filters import AuditFilters, DeploymentFilters
from dashboard.audit.models import AuditEvent
from dashboard.deployments.models import Deployment, DeploymentEvent
from dashboard.deployments.selectors import deployment_as_dict

T = TypeVar("T")

# CONTRACT.md section 4; the model's own values are added so a status the
# state machine gains is filterable without touching this list.
CONTRACT_STATUSES = (
    "awaiting_approval",
    "pending",
    "in_progress",
    "verifying",
    "baking",
    "succeeded",
    "failed",
    "rolled_back",
    "rejected",
    "expired",
)
CONTRACT_KINDS = ("promote", "rollback", "auto_rollback")


def deployment_statuses() -> list[str]:
    return list(dict.fromkeys([*CONTRACT_STATUSES, *Deployment.Status.values]))


def deployment_kinds() -> list[str]:
    return list(dict.fromkeys([*CONTRACT_KINDS, *Deployment.Kind.values]))


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_previous(self) -> bool:
        return self.page > 1


def _page(qs: QuerySet[Any], *, page: int, page_size: int) -> Page[Any]:
    total = qs.count()
    start = (page - 1) * page_size
    return Page(
        items=list(qs[start : start + page_size]), page=page, page_size=page_size, total=total
    )


# --- Audit history ---------------------------------------------------------


def audit_event_queryset(filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Events matching ``filters``, newest first."""
    qs = AuditEvent.objects.all()
    if filters.actions:
        qs = qs.filter(action__in=filters.actions)
    if filters.model:
        qs = qs.filter(model_name=filters.model)
    if filters.environment:
        qs = qs.filter(environment_name=filters.environment)
    if filters.version:
        qs = qs.filter(version=filters.version)
    if filters.user:
        qs = qs.filter(actor_name=filters.user)
    if filters.deployment is not None:
        qs = qs.filter(deployment_id=filters.deployment)
    if filters.since is not None:
        qs = qs.filter(at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(at__lt=filters.until)
    return qs.order_by("-at", "-id")


def audit_event_page(
    *, filters: AuditFilters, page: int = 1, page_size: int = 50
) -> Page[AuditEvent]:
    """One page of the history, newest first."""
    return _page(audit_event_queryset(filters), page=page, page_size=page_size)


def audit_actor_names(*, limit: int = 500) -> list[str]:
    """Names that appear in the history (for the page's user filter)."""
    names = AuditEvent.objects.order_by("actor_name").values_list("actor_name", flat=True)
    return list(names.distinct()[:limit])


def audit_model_names(*, limit: int = 500) -> list[str]:
    names = (
        AuditEvent.objects.exclude(model_name="")
        .order_by("model_name")
        .values_list("model_name", flat=True)
    )
    return list(names.distinct()[:limit])


# --- Deployments list -------------------------------------------------------


def deployment_history_queryset(
    filters: DeploymentFilters, *, with_events: bool = True
) -> QuerySet[Deployment]:
    """Deployments matching ``filters``, newest first, with what
    ``deployment_as_dict`` reads fetched up front (no query per row).

    ``with_events=False`` leaves each deployment's event log empty, for
    exports that have no column for it."""
    qs = Deployment.objects.select_related("environment")
    events = DeploymentEvent.objects.order_by("at", "id")
    if not with_events:
        events = events.none()
    qs = qs.prefetch_related(Prefetch("events", queryset=events))
    if filters.model:
        qs = qs.filter(environment__model_name=filters.model)
    if filters.environment:
        qs = qs.filter(environment__name=filters.environment)
    if filters.kinds:
        qs = qs.filter(kind__in=filters.kinds)
    if filters.statuses:
        qs = qs.filter(status__in=filters.statuses)
    if filters.requested_by:
        qs = qs.filter(requested_by_name=filters.requested_by)
    if filters.since is not None:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until is not None:
        qs = qs.filter(created_at__lt=filters.until)
    return qs.order_by("-created_at", "-id")


def deployment_history_page(
    *, filters: DeploymentFilters, page: int = 1, page_size: int = 50
) -> Page[dict[str, Any]]:
    """One page of deployments as the API's deployment dicts."""
    found = _page(deployment_history_queryset(filters), page=page, page_size=page_size)
    return Page(
        items=[deployment_as_dict(d) for d in found.items],
        page=found.page,
        page_size=found.page_size,
        total=found.total,
    )


def deployment_history_rows(
    *, filters: DeploymentFilters, chunk_size: int = 500
) -> Iterator[dict[str, Any]]:
    """Every matching deployment as a deployment dict (without its event
    log), read in chunks so an export of any size holds one chunk in memory."""
    qs = deployment_history_queryset(filters, with_events=False)
    for deployment in qs.iterator(chunk_size=chunk_size):
        yield deployment_as_dict(deployment)
