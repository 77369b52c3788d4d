"""Celery tasks of webhooks: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.conf import settings

from dashboard.webhooks import services


@shared_task(
    acks_late=True,
    ignore_result=True,
    soft_time_limit=int(4 * settings.WEBHOOK_TIMEOUT_SECONDS) + 60,
)
def webhook_deliver(delivery_id: int) -> None:
    services.webhook_attempt(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def webhooks_dispatch_due() -> None:
    services.webhooks_dispatch_due()
