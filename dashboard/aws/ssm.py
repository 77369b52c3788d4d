"""AWS Systems Manager Parameter Store: the promoted-version pointers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsNotFoundError, translate

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient


def _ssm() -> SSMClient:
    return cast("SSMClient", client("ssm"))


@dataclass(frozen=True)
class ParameterValue:
    """One version of a parameter."""

    value: str
    version: int
    modified_at: dt.datetime | None = None
    modified_by: str = ""


def get_parameter(*, name: str) -> str | None:
    """Return the parameter's current value, or None when it does not exist."""
    found = get_parameter_version(name=name)
    return found.value if found is not None else None


def get_parameter_version(*, name: str, version: int | None = None) -> ParameterValue | None:
    """Return the parameter's current value (or its ``version``, with SSM's own
    ``name:version`` selector) and version number; None when it does not exist."""
    selector = f"{name}:{version}" if version is not None else name
    try:
        response = _ssm().get_parameter(Name=selector)
    except Exception as exc:
        error = translate(exc, operation="GetParameter")
        if isinstance(error, AwsNotFoundError):
            return None
        raise error from exc
    parameter = response["Parameter"]
    return ParameterValue(
        value=str(parameter.get("Value", "")),
        version=int(parameter.get("Version", 0)),
        modified_at=parameter.get("LastModifiedDate"),
    )


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


def get_parameter_history(*, name: str) -> list[ParameterValue]:
    """Every version SSM still keeps of the parameter (at most 100), newest
    first; empty when the parameter does not exist."""
    history: list[ParameterValue] = []
    token: str | None = None
    try:
        while True:
            kwargs: dict[str, Any] = {"Name": name, "MaxResults": 50}
            if token:
                kwargs["NextToken"] = token
            response = _ssm().get_parameter_history(**kwargs)
            for item in response.get("Parameters", []):
                history.append(
                    ParameterValue(
                        value=str(item.get("Value", "")),
                        version=int(item.get("Version", 0)),
                        modified_at=item.get("LastModifiedDate"),
                        modified_by=str(item.get("LastModifiedUser", "")),
                    )
                )
            token = response.get("NextToken")
            if not token:
                break
    except Exception as exc:
        error = translate(exc, operation="GetParameterHistory")
        if isinstance(error, AwsNotFoundError):
            return []
        raise error from exc
    history.sort(key=lambda item: item.version, reverse=True)
    return history
