"""Deployments through a real Celery worker on the real Redis broker (and the
real PostgreSQL when it is there): the API enqueues on commit, the worker
runs the deployment to its end; a deployment whose worker died is resumed."""

from __future__ import annotations

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

    app.control.purge()
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING"
    ):
        yield


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


def test_stale_deployment_is_resumed(
    deploy_stack: Any, personas: Any, worker: None, settings: Any
) -> None:
    from dashboard.deployments.services import deployments_resume_stale

    # A deployment whose worker was killed before it reported anything.
    deployment = Deployment.objects.create(
        environment=deploy_stack["environment"],
        to_version="1.0",
        from_version="1.0",
        pointer={"version": "1.0"},
        status="in_progress",
        started_at=timezone.now(),
        heartbeat_at=timezone.now() - timezone.timedelta(minutes=10),
        requested_by=personas["deployer"],
    )
    assert deployments_resume_stale() == [deployment.pk]
    finished = wait_final(deployment.pk)
    assert finished.status == "succeeded", finished.error
    assert any("resumed" in e.message for e in finished.events.all())


def test_database_is_postgres_when_available() -> None:
    import os

    if os.environ.get("MODELDECK_NO_POSTGRES") == "1":
        pytest.skip("PostgreSQL is absent (see tests/services.py)")
    assert connection.vendor == "postgresql"
