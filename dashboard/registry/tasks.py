"""Celery tasks of the registry: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.conf import settings

from dashboard.aws.errors import AwsTransientError
from dashboard.registry import services


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(AwsTransientError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
    soft_time_limit=int(settings.VALIDATION_TIME_LIMIT_SECONDS) + 600,
)
def version_validate(version_id: int) -> None:
    services.version_validate(version_id=version_id)


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(AwsTransientError,),
    retry_backoff=True,
    max_retries=8,
)
def version_hash(version_id: int) -> None:
    services.version_hash(version_id=version_id)


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(AwsTransientError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
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
def uploads_abort_abandoned() -> None:
    from dashboard.registry.uploads import uploads_abort_abandoned as abort

    abort()
