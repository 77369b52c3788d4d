"""Celery tasks: thin wrappers that take ids and call one service.

No task waits for AWS: ``deployment_step`` takes the deployment's due steps
and returns; ``deployments_reconcile`` (beat) enqueues whatever is due, so a
lost message or a dead worker only delays a deployment.
"""

from celery import shared_task
from django.conf import settings

from dashboard.deployments import reconciler, services


@shared_task(
    acks_late=True,
    ignore_result=True,
    # A hung step is killed before its lease could be mistaken for a live one.
    soft_time_limit=settings.DEPLOYMENT_STEP_TIME_LIMIT_SECONDS,
    time_limit=settings.DEPLOYMENT_STEP_TIME_LIMIT_SECONDS + 15,
)
def deployment_step(deployment_id: int) -> None:
    reconciler.deployment_advance(deployment_id=deployment_id)


@shared_task(ignore_result=True, expires=60)
def deployments_reconcile() -> None:
    reconciler.deployments_reconcile()


@shared_task(ignore_result=True, expires=300)
def environments_watch_pointers() -> None:
    services.environments_refresh_pointers()
    services.environments_check_drift()
