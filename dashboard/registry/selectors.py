"""Reads of the model registry, from the database index of S3.

Listing is a single indexed query per page (never all versions at once), so
a model with tens of thousands of versions pages as fast as one with ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from dashboard.registry.models import ModelVersion

SORTS = {
    "newest": ("-created_at", "-id"),
    "oldest": ("created_at", "id"),
    "version": ("version",),
    "-version": ("-version",),
    "size": ("size", "id"),
    "-size": ("-size", "-id"),
}


@dataclass(frozen=True)
class Page:
    items: list[ModelVersion]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def model_list() -> list[str]:
    """Names of every model with at least one version or environment, sorted."""
    from dashboard.deployments.models import Environment

    names = set(ModelVersion.objects.values_list("model_name", flat=True).distinct())
    names.update(Environment.objects.values_list("model_name", flat=True).distinct())
    return sorted(names)


def model_exists(*, model: str) -> bool:
    from dashboard.deployments.models import Environment

    return (
        ModelVersion.objects.filter(model_name=model).exists()
        or Environment.objects.filter(model_name=model).exists()
    )


def version_queryset(
    *,
    model: str,
    status: str | None = None,
    versions: list[str] | None = None,
    q: str | None = None,
    sort: str = "newest",
) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.filter(model_name=model)
    if status:
        qs = qs.filter(status=status)
    if versions is not None:
        qs = qs.filter(version__in=versions)
    if q:
        qs = qs.filter(
            Q(version__icontains=q)
            | Q(notes__icontains=q)
            | Q(created_by__icontains=q)
            | Q(sha256__startswith=q.lower())
        )
    return qs.order_by(*SORTS.get(sort, SORTS["newest"]))


def version_page(
    *,
    model: str,
    page: int = 1,
    page_size: int = 50,
    status: str | None = None,
    versions: list[str] | None = None,
    q: str | None = None,
    sort: str = "newest",
) -> Page:
    """One page of the model's versions (newest first by default)."""
    qs = version_queryset(model=model, status=status, versions=versions, q=q, sort=sort)
    total = qs.count()
    start = (page - 1) * page_size
    return Page(
        items=list(qs[start : start + page_size]), page=page, page_size=page_size, total=total
    )


def promotable_versions(*, model: str, limit: int = 200) -> list[str]:
    """The newest valid versions of ``model`` (what the promote forms offer)."""
    return list(
        ModelVersion.objects.filter(model_name=model, status=ModelVersion.Status.VALID)
        .order_by("-created_at", "-id")
        .values_list("version", flat=True)[:limit]
    )


def version_get(*, model: str, version: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(model_name=model, version=version).first()


def version_as_dict(info: ModelVersion, *, environments: list[str]) -> dict[str, Any]:
    return {
        "version": info.version,
        "artifact": info.artifact,
        "format": info.format,
        "size": info.size,
        "sha256": info.sha256 or None,
        "input": (
            {"shape": info.input_shape, "dtype": info.input_dtype} if info.input_shape else None
        ),
        "status": info.status,
        "status_detail": info.status_detail,
        "validation": info.validation,
        "created_at": info.created_at,
        "created_by": info.created_by,
        "notes": info.notes,
        "metrics": info.metrics,
        "environments": environments,
    }
