"""Fixtures shared by the whole suite.

AWS is faked at the network edge: one moto server (a thread of this process,
also reachable from subprocesses) for the session, reset before each test that
uses it. Personas (anonymous, outsider, viewer, deployer, admin) are real users.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# Real processes the tests start must never pick up a developer's credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ["AWS_ACCESS_KEY_ID"] = "test"
os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

# Every AWS call the dashboard's clients make in this run, in this process and in
# the stacks it starts, is appended here (dashboard/aws/clients.py) and checked
# against the dashboard's IAM policy by tests/infra/test_recorded_calls.py, last.
_CALL_LOG_DIR = None
if not os.environ.get("MODELDECK_AWS_CALL_LOG"):
    _CALL_LOG_DIR = tempfile.mkdtemp(prefix="modeldeck-aws-calls-")
    os.environ["MODELDECK_AWS_CALL_LOG"] = os.path.join(_CALL_LOG_DIR, "calls.jsonl")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CALL_LOG_DIR:
        shutil.rmtree(_CALL_LOG_DIR, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_postgres = os.environ.get("MODELDECK_NO_POSTGRES") == "1"
    no_redis = os.environ.get("MODELDECK_NO_REDIS") == "1"
    no_chromium = shutil.which("chromium") is None
    # The check of the recorded AWS calls needs every other test to have run.
    items.sort(key=lambda item: item.nodeid.startswith("tests/infra/test_recorded_calls.py"))
    for item in items:
        if no_postgres and "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL is absent (see tests/services.py)"))
        if no_redis and "redis" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="Redis is absent and could not be started"))
        if no_chromium and "browser" in item.keywords:
            item.add_marker(
                pytest.mark.skip(reason="Debian's chromium is not installed (make browser-deps)")
            )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The session's embedded AWS; yields its endpoint URL."""
    from devstack.embedded_aws import start_moto_server

    server = start_moto_server(port=0)
    endpoint = server.endpoint_url
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous


@pytest.fixture
def aws(moto_server: str, settings: Any) -> Iterator[str]:
    """A clean embedded AWS with the models bucket; yields the endpoint URL."""
    from dashboard.aws.clients import reset_clients
    from devstack.embedded_aws import bootstrap

    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    settings.MODELS_BUCKET = "test-models"
    reset_clients()
    bootstrap(
        endpoint_url=moto_server,
        region="us-east-1",
        bucket="test-models",
        cors_origins=["http://testserver"],
    )
    yield moto_server
    reset_clients()


@pytest.fixture
def personas(db: Any) -> dict[str, Any]:
    """anonymous (None), outsider (no role), viewer, deployer, admin, superuser."""
    from django.contrib.auth import get_user_model

    from dashboard.accounts.services import user_set_role

    user_model = get_user_model()
    users: dict[str, Any] = {"anonymous": None}
    for name in ("outsider", "viewer", "deployer", "admin"):
        user = user_model.objects.create_user(username=name, password="pw-" + name)
        user_set_role(user=user, role=None if name == "outsider" else name)
        users[name] = user
    users["superuser"] = user_model.objects.create_superuser(username="root", password="pw-root")
    return users


def write_artifact(path: Path, size: int = 2048) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def publish(
    model: str, version: str, tmp_path: Path, *, status: str = "valid", **extra: Any
) -> Any:
    """Publish a version with a (random-bytes) artifact through the real service.

    Random bytes would never pass validation, so ``status`` records the outcome
    the test needs (validation itself is tested in test_validation.py)."""
    from dashboard.registry.models import ModelVersion
    from dashboard.registry.services import version_publish

    artifact = write_artifact(tmp_path / f"{model}-{version}.pt")
    row = version_publish(
        model=model,
        version=version,
        path=artifact,
        artifact="model.pt",
        format=extra.pop("format", "torchscript"),
        input_shape=extra.pop("input_shape", [4]),
        input_dtype=extra.pop("input_dtype", "float32"),
        created_by=extra.pop("created_by", "tests"),
        **extra,
    )
    ModelVersion.objects.filter(pk=row.pk).update(status=status)
    row.refresh_from_db()
    return row


@pytest.fixture(autouse=True)
def _local_cache(settings: Any) -> Iterator[None]:
    # Each test gets an empty cache (the login rate limit lives there).
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2 at Django's production cost takes ~0.3 s per user on this box;
    # the tests check permissions, not hashing strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
