"""Fifty promotes of one environment at once through the HTTP API on the real
PostgreSQL: exactly one is accepted (202), the other 49 are told another
deployment is in flight (409), and nothing else happens. (The e2e suite does
the same on the local stack's SQLite.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard.deployments.models import Deployment
from tests.conftest import publish
from tests.dashboard.factories import make_environment, token_headers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session", autouse=True)
def _deep_listen_backlog() -> None:
    # Django's test server listens with socketserver's backlog of 5: fifty
    # clients at once would be refused by the kernel, not by the dashboard.
    from django.core.servers.basehttp import WSGIServer

    WSGIServer.request_queue_size = 128


def test_fifty_concurrent_promotes_start_exactly_one(
    aws: str, tmp_path: Path, personas: Any, live_server: Any
) -> None:
    from django.db import connection

    assert connection.vendor == "postgresql"
    publish("iris", "1.1", tmp_path)
    make_environment("iris", "staging")
    headers = token_headers(personas["deployer"])
    url = f"{live_server.url}/api/models/iris/environments/staging/promote"
    barrier = threading.Barrier(50)
    answers: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            status = client.post(url, headers=headers, json={"version": "1.1"}).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [202] + [409] * 49
    assert Deployment.objects.count() == 1
