"""Builders for dashboard tests (real rows, real S3 objects in moto)."""

from __future__ import annotations

from typing import Any

from dashboard.accounts.services import token_create
from dashboard.deployments.models import Environment
from dashboard.deployments.services import environment_ensure

FAKE_ARN = (
    "arn:aws:apprunner:us-east-1:000000000000:service/{name}/0123456789abcdef0123456789abcdef"
)


def make_environment(model: str = "iris", name: str = "staging", **extra: Any) -> Environment:
    return environment_ensure(
        model=model,
        name=name,
        ssm_parameter=extra.pop("ssm_parameter", f"/models/{model}/{name}"),
        service_arn=extra.pop("service_arn", FAKE_ARN.format(name=f"{model}-{name}")),
        service_url=extra.pop("service_url", "http://127.0.0.1:9"),
        **extra,
    )


def token_headers(user: Any) -> dict[str, str]:
    _, key = token_create(user=user, name="tests")
    return {"Authorization": f"Token {key}"}
