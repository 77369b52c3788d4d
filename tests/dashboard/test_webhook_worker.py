"""Webhook deliveries through a real Celery worker on the real Redis broker:
queued on commit, retried from the database by the beat task, and never lost
with a lost queue message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import transaction

from dashboard.webhooks.models import WebhookDelivery
from dashboard.webhooks.services import EVENTS, webhook_create, webhooks_emit
from dashboard.webhooks.tasks import webhooks_dispatch_due
from tests.dashboard.factories import make_environment
from tests.dashboard.webhook_receiver import receiver

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@contextmanager
def running_worker() -> Iterator[None]:
    from celery.contrib.testing.worker import start_worker

    from dashboard.celery import app

    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
    ):
        yield


def purge() -> None:
    from dashboard.celery import app

    app.control.purge()


def wait_state(delivery_id: int, state: str, timeout: float = 30.0) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = WebhookDelivery.objects.get(pk=delivery_id)
        if row.state == state:
            return row
        time.sleep(0.1)
    raise AssertionError(f"delivery {delivery_id} is {row.state}, not {state}")


def test_queued_on_commit_and_retried_by_the_beat_task(personas: Any, settings: Any) -> None:
    settings.WEBHOOK_RETRY_BASE_SECONDS = 1.0
    purge()
    environment = make_environment("iris", "staging")
    with receiver(500, 200) as rec, running_worker():
        saved = webhook_create(
            environment=environment, url=rec.url, events=list(EVENTS), actor=None
        )
        with transaction.atomic():
            [delivery] = webhooks_emit(environment=environment, event="deployment.started")
        rec.wait_for(1)
        assert wait_state(delivery.pk, "pending").attempts == 1
        # The retry is due in about a second; the beat task finds it.
        deadline = time.monotonic() + 30
        while len(rec.received) < 2 and time.monotonic() < deadline:
            webhooks_dispatch_due.delay()
            time.sleep(0.5)
        done = wait_state(delivery.pk, "succeeded")
    assert done.attempts == 2 and len(rec.received) == 2
    assert all(r.signature_valid(saved.secret) for r in rec.received)


def test_a_lost_queue_message_only_delays_the_delivery(personas: Any) -> None:
    purge()
    environment = make_environment("iris", "staging")
    with receiver(200) as rec:
        webhook_create(environment=environment, url=rec.url, events=list(EVENTS), actor=None)
        with transaction.atomic():
            [delivery] = webhooks_emit(environment=environment, event="deployment.failed")
        # The message is gone (Redis restarted empty, say) before any worker took it.
        purge()
        with running_worker():
            time.sleep(1)
            assert rec.received == []
            webhooks_dispatch_due.delay()
            rec.wait_for(1)
            done = wait_state(delivery.pk, "succeeded")
    assert done.attempts == 1 and len(rec.received) == 1
