"""Deployments through a real Celery worker on the real Redis broker (and the
real PostgreSQL when it is there): the API enqueues on commit, the worker
takes the steps the reconcile beat queues; a deployment whose worker died
mid-step is picked up once its lease lapses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from dashboard.deployments.models import Deployment
from tests.dashboard.factories import token_headers

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(deploy_stack: Any) -> Iterator[None]:
    from celery.contrib.testing.worker import start_worker

    from dashboard.celery import app
    from dashboard.deployments.tasks import deployments_reconcile

    app.control.purge()
    stop = threading.Event()

    def beat() -> None:  # what celery beat does: send the reconcile task on schedule
        while not stop.wait(0.3):
            deployments_reconcile.delay()

    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
    ):
        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()


def wait_final(deployment_id: int, timeout: float = 60) -> Deployment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = Deployment.objects.get(pk=deployment_id)
        if deployment.status in Deployment.FINAL:
            return deployment
        time.sleep(0.2)
    raise AssertionError(f"deployment {deployment_id} did not finish: {deployment.status}")


def test_api_promote_runs_on_the_worker(deploy_stack: Any, personas: Any, worker: None) -> None:
    client = Client()
    response = client.post(
        "/api/models/iris/environments/staging/promote",
        data='{"version": "1.1", "reason": "ci"}',
        content_type="application/json",
        headers=token_headers(personas["deployer"]),
    )
    assert response.status_code == 202, response.content
    deployment = wait_final(response.json()["id"])
    assert deployment.status == "succeeded", deployment.error
    assert deployment.live_version == "1.1"
    body = client.get(
        f"/api/deployments/{deployment.pk}", headers=token_headers(personas["viewer"])
    ).json()
    assert body["status"] == "succeeded" and body["finished_at"]


def test_a_deployment_whose_worker_died_mid_step_is_picked_up(
    deploy_stack: Any, personas: Any, worker: None, settings: Any
) -> None:
    settings.DEPLOYMENT_LEASE_SECONDS = 1.0
    # A worker claimed the first step and was killed (its lease lapses in 1 s).
    deployment = Deployment.objects.create(
        environment=deploy_stack["environment"],
        to_version="1.1",
        from_version="1.0",
        pointer=_pointer("1.1"),
        status="pending",
        next_step_at=timezone.now(),
        claim_token="killed-worker",
        claimed_until=timezone.now() + timezone.timedelta(seconds=1),
        requested_by=personas["deployer"],
        requested_by_name="deployer",
    )
    finished = wait_final(deployment.pk)
    assert finished.status == "succeeded", finished.error
    assert finished.claim_token == ""


def _pointer(version: str) -> dict[str, Any]:
    from django.conf import settings

    from dashboard.deployments.pointer import pointer_build
    from dashboard.registry.selectors import version_get

    info = version_get(model="iris", version=version)
    assert info is not None
    return pointer_build(
        info=info,
        bucket=settings.MODELS_BUCKET,
        promoted_by="deployer",
        reason="test",
        now=timezone.now(),
    )


def test_database_is_postgres_when_available() -> None:
    import os

    if os.environ.get("MODELDECK_NO_POSTGRES") == "1":
        pytest.skip("PostgreSQL is absent (see tests/services.py)")
    assert connection.vendor == "postgresql"


def test_the_frequent_periodic_tasks_are_not_logged_at_info() -> None:
    import logging

    from dashboard.celery import QuietPeriodicTasks

    quiet = QuietPeriodicTasks()

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("celery", level, __file__, 1, message, None, None)

    assert not quiet.filter(
        record(logging.INFO, "Task dashboard.deployments.tasks.deployments_reconcile[1] received")
    )
    assert quiet.filter(record(logging.INFO, "Task dashboard.deployments.tasks.deployment_step[1]"))
    assert quiet.filter(record(logging.ERROR, "deployments_reconcile raised"))
