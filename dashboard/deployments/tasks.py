"""Celery tasks: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.conf import settings

from dashboard.deployments import services


@shared_task(
    acks_late=True,
    ignore_result=True,
    soft_time_limit=settings.DEPLOYMENT_TIMEOUT_SECONDS + 120,
)
def deployment_run(deployment_id: int) -> None:
    services.deployment_execute(deployment_id=deployment_id)


@shared_task(ignore_result=True)
def deployments_resume_stale() -> None:
    services.deployments_resume_stale()
