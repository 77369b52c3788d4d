"""Writes to the audit history.

``audit_record`` is a single INSERT on the caller's connection: called inside
a transaction, the event commits or rolls back with the action it describes,
so the history never shows an action that did not happen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder

from dashboard.audit.models import AuditEvent

if TYPE_CHECKING:
    from dashboard.deployments.models import Deployment, Environment

logger = logging.getLogger(__name__)

SYSTEM = "system"
# The detail is for a few facts (old and new values, an error line), not for
# documents: a bigger one is replaced by a note so the table stays small.
DETAIL_MAX_BYTES = 8192


def _clip(value: Any, limit: int) -> str:
    # PostgreSQL refuses NUL in text: drop it rather than fail the action.
    text = "" if value is None else str(value).replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _actor(actor: Any, actor_name: str | None) -> tuple[Any, str]:
    """The user row to link (or None) and the name to keep."""
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor, _clip(actor_name or actor.get_username(), 255)
    return None, _clip(actor_name or SYSTEM, 255)


def _detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    if not detail:
        return {}
    # Round-trip through JSON so dates, UUIDs and decimals are stored as the
    # strings a reader gets back, and so a bad value fails here, loudly.
    encoded = json.dumps(detail, cls=DjangoJSONEncoder, sort_keys=True)
    if len(encoded) > DETAIL_MAX_BYTES:
        logger.warning("audit detail of %d bytes truncated", len(encoded))
        return {"truncated": True, "excerpt": encoded[:1000]}
    result: dict[str, Any] = _without_nul(json.loads(encoded))
    return result


def audit_record(
    *,
    actor: Any,
    action: str,
    model: str = "",
    environment: Environment | str | None = None,
    version: str = "",
    deployment: Deployment | int | None = None,
    object_type: str = "",
    object_id: str | int = "",
    object_repr: str = "",
    reason: str = "",
    result: str = "",
    detail: dict[str, Any] | None = None,
    actor_name: str | None = None,
    at: dt.datetime | None = None,
) -> AuditEvent:
    """Add one event to the history and return it.

    ``actor`` is the user who acted, or None for the system (a worker, the
    reconciler); ``actor_name`` overrides the name kept (e.g. the IAM identity
    SSM reports for a change made outside the dashboard). ``environment`` may
    be an Environment (its model is taken from it) or a name; ``deployment``
    a Deployment (model, environment and target version are taken from it
    unless given) or an id. ``action`` must be one of ``AuditEvent.Action``;
    anything else is a programming error (ValueError). Strings longer than
    their column are cut, never refused: an audit write must not make the
    action it records fail.
    """
    if action not in AuditEvent.Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    environment_name = ""
    if environment is not None and not isinstance(environment, str):
        model = model or environment.model_name
        environment_name = environment.name
    elif environment:
        environment_name = environment
    deployment_id: int | None = None
    if deployment is not None and not isinstance(deployment, int):
        deployment_id = deployment.pk
        model = model or deployment.environment.model_name
        environment_name = environment_name or deployment.environment.name
        version = version or deployment.to_version
    elif deployment is not None:
        deployment_id = deployment
    user, name = _actor(actor, actor_name)
    fields: dict[str, Any] = {
        "actor": user,
        "actor_name": name,
        "action": action,
        "model_name": _clip(model, 63),
        "environment_name": _clip(environment_name, 32),
        "version": _clip(version, 64),
        "deployment_id": deployment_id,
        "object_type": _clip(object_type, 32),
        "object_id": _clip(object_id, 64),
        "object_repr": _clip(object_repr, 200),
        "reason": _clip(reason, 500),
        "result": _clip(result, 32),
        "detail": _detail(detail),
    }
    if at is not None:
        fields["at"] = at
    return AuditEvent.objects.create(**fields)
