from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import publish

FAKE_INFERENCE = Path(__file__).with_name("fake_inference.py")


@pytest.fixture
def deploy_stack(
    aws: str, db: Any, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """Embedded AWS with iris 1.0/1.1/2.0-broken, staging pointing at 1.0, and the
    App Runner stand-in running one staging service of fake inference instances."""
    from dashboard.aws import ssm
    from dashboard.aws.clients import reset_clients
    from dashboard.deployments.pointer import pointer_build, pointer_dumps
    from dashboard.deployments.services import environment_ensure
    from dashboard.registry.selectors import version_get
    from devstack.apprunner.config import parse_config
    from devstack.apprunner.server import run_in_background

    for version in ("1.0", "1.1", "2.0-broken"):
        publish("iris", version, tmp_path)
    info = version_get(model="iris", version="1.0")
    assert info is not None
    pointer = pointer_build(
        info=info, bucket="test-models", promoted_by="t", reason="", now=timezone.now()
    )
    ssm.put_parameter(name="/models/iris/staging", value=pointer_dumps(pointer))
    config = parse_config(
        {
            "region": "us-east-1",
            "account_id": "000000000000",
            "state_dir": str(tmp_path / "apprunner"),
            "services": [
                {
                    "name": "iris-staging",
                    "port": 0,
                    "command": [sys.executable, str(FAKE_INFERENCE)],
                    "env": {
                        "MODEL_SSM_PARAMETER": "/models/iris/staging",
                        "AWS_ENDPOINT_URL": aws,
                        "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": "us-east-1",
                    },
                    "health_check_path": "/readyz",
                    "health_check_timeout_seconds": 20,
                    "health_check_interval_seconds": 0.1,
                }
            ],
        }
    )
    settings.DEPLOYMENT_POLL_SECONDS = 0.1
    settings.DEPLOYMENT_VERIFY_POLL_SECONDS = 0.1
    settings.DEPLOYMENT_VERIFY_SECONDS = 10.0
    settings.DEPLOYMENT_RETRY_MAX_SECONDS = 0.5
    settings.ENVIRONMENT_STATE_CACHE_SECONDS = 0
    with run_in_background(config) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_APPRUNNER", running.endpoint_url)
        reset_clients()
        environment = environment_ensure(
            model="iris",
            name="staging",
            ssm_parameter="/models/iris/staging",
            service_arn=running.service_arns["iris-staging"],
            service_url=running.service_urls["iris-staging"],
        )
        wait_running(running.service_arns["iris-staging"])
        yield {
            "environment": environment,
            "url": running.service_urls["iris-staging"],
            "arn": running.service_arns["iris-staging"],
            "endpoint": running.endpoint_url,
            "aws": aws,
            "tmp_path": tmp_path,
        }
    reset_clients()
    os.environ.pop("AWS_ENDPOINT_URL_APPRUNNER", None)


def wait_running(arn: str, timeout: float = 30.0) -> None:
    """Wait for the service's first instance, as App Runner's CREATE_SERVICE."""
    import time

    from dashboard.aws import apprunner

    deadline = time.monotonic() + timeout
    while apprunner.describe_service(service_arn=arn).status != "RUNNING":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{arn} did not reach RUNNING")
        time.sleep(0.1)
