"""AWS Systems Manager Parameter Store: the promoted-version pointers."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsNotFoundError, translate

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient


def _ssm() -> SSMClient:
    return cast("SSMClient", client("ssm"))


def get_parameter(*, name: str) -> str | None:
    """Return the parameter's current value, or None when it does not exist."""
    try:
        response = _ssm().get_parameter(Name=name)
    except Exception as exc:
        error = translate(exc, operation="GetParameter")
        if isinstance(error, AwsNotFoundError):
            return None
        raise error from exc
    return response["Parameter"].get("Value")


def put_parameter(*, name: str, value: str, description: str = "") -> int:
    """Create or overwrite a String parameter; return its new version number.

    SSM keeps every earlier value in the parameter's history, which is the
    tamper-evident record of pointer changes.
    """
    try:
        response = _ssm().put_parameter(
            Name=name,
            Value=value,
            Type="String",
            Overwrite=True,
            Description=description[:1024],
            Tier="Standard",
        )
    except Exception as exc:
        raise translate(exc, operation="PutParameter") from exc
    return int(response.get("Version", 0))
