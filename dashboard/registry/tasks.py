"""Celery tasks of the registry: thin wrappers that take ids and call one service."""

from typing import Any

from celery import shared_task
from django.conf import settings

from dashboard.aws.errors import AwsTransientError
from dashboard.registry import services
from dashboard.registry.validation import run_ticket

# Tasks that call AWS: redelivered if the worker dies (acks_late), retried
# with backoff on throttling and 5xx, never more than 8 times.
AWS_RETRIES: dict[str, Any] = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (AwsTransientError,),
    "retry_backoff": True,
    "max_retries": 8,
}


@shared_task(**AWS_RETRIES)
def version_validate(version_id: int) -> None:
    services.version_validation_enqueue(version_id=version_id)


# Routed to the "validation" queue (CELERY_TASK_ROUTES): its workers load
# untrusted model files, so they get no database and no AWS credentials; the
# ticket carries a presigned URL, and the result goes back through the broker.
@shared_task(
    **AWS_RETRIES,
    retry_backoff_max=300,
    soft_time_limit=int(settings.VALIDATION_TIME_LIMIT_SECONDS) + 600,
)
def validation_run(ticket: dict[str, Any]) -> None:
    result = run_ticket(ticket)
    version_record_validation.delay(ticket, result)


@shared_task(acks_late=True, ignore_result=True)
def version_record_validation(ticket: dict[str, Any], result: dict[str, Any]) -> None:
    services.version_record_validation(ticket=ticket, result=result)


@shared_task(**AWS_RETRIES)
def version_hash(version_id: int) -> None:
    services.version_hash(version_id=version_id)


@shared_task(
    **AWS_RETRIES,
    retry_backoff_max=300,
)
def registry_describe(version_ids: list[int]) -> None:
    """Read the manifests of folders the sync indexed from the listing."""
    services.versions_describe(version_ids=version_ids)


@shared_task(ignore_result=True)
def registry_sync() -> None:
    from dashboard.deployments.services import environments_refresh_pointers

    services.registry_sync()
    environments_refresh_pointers()


@shared_task(ignore_result=True)
def validations_requeue_stale() -> None:
    services.validations_requeue_stale()


@shared_task(ignore_result=True)
def uploads_abort_abandoned() -> None:
    from dashboard.registry.uploads import uploads_abort_abandoned as abort

    abort()
