"""Reads about webhooks and their deliveries."""

from __future__ import annotations

import datetime as dt

from django.db.models import Prefetch, QuerySet

from dashboard.audit.selectors import Page
from dashboard.deployments.models import Environment
from dashboard.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


def webhook_list(*, environment: Environment) -> QuerySet[Webhook]:
    return Webhook.objects.filter(environment=environment).order_by("id")


def webhook_get(*, environment: Environment, webhook_id: int) -> Webhook | None:
    return (
        Webhook.objects.select_related("environment")
        .filter(environment=environment, pk=webhook_id)
        .first()
    )


def webhook_deliveries_due(*, now: dt.datetime, limit: int = 500) -> list[int]:
    """Ids of deliveries whose next attempt is due, or whose worker stopped
    mid-attempt (claim expired), oldest due first."""
    pending = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "id")
    stale = WebhookDelivery.objects.filter(
        state=WebhookDelivery.State.SENDING, claimed_until__lt=now
    ).order_by("claimed_until", "id")
    ids = list(pending.values_list("id", flat=True)[:limit])
    ids += list(stale.values_list("id", flat=True)[: max(0, limit - len(ids))])
    return ids


def delivery_page(
    *, environment: Environment, page: int = 1, page_size: int = 25
) -> Page[WebhookDelivery]:
    """The environment's deliveries, newest first, each with its whole log."""
    qs = (
        WebhookDelivery.objects.filter(webhook__environment=environment)
        .select_related("webhook")
        .prefetch_related(Prefetch("log", queryset=WebhookAttempt.objects.order_by("number", "id")))
        .order_by("-created_at", "-id")
    )
    total = qs.count()
    start = (page - 1) * page_size
    return Page(
        items=list(qs[start : start + page_size]), page=page, page_size=page_size, total=total
    )


def deliveries_in_flight(*, environment: Environment) -> bool:
    return WebhookDelivery.objects.filter(
        webhook__environment=environment,
        state__in=[WebhookDelivery.State.PENDING, WebhookDelivery.State.SENDING],
    ).exists()
