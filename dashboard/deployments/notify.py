"""Who hears about a deployment's changes: the audit history and the
environment's webhooks. Called inside the transaction that records the
change, so nothing is announced that did not happen (webhook deliveries are
queued on commit; audit events roll back with the change)."""

from __future__ import annotations

import logging
from typing import Any

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record
from dashboard.deployments.models import Deployment, Environment
from dashboard.webhooks.services import webhooks_emit

logger = logging.getLogger(__name__)

# The webhook event for each final status (CONTRACT.md section 4); rejected
# and expired requests changed nothing and have no webhook event.
FINAL_EVENTS = {
    Deployment.Status.SUCCEEDED: "deployment.succeeded",
    Deployment.Status.FAILED: "deployment.failed",
    Deployment.Status.ROLLED_BACK: "deployment.rolled_back",
}
_REQUESTED = {
    Deployment.Kind.PROMOTE: AuditEvent.Action.PROMOTE,
    Deployment.Kind.ROLLBACK: AuditEvent.Action.ROLLBACK,
    Deployment.Kind.AUTO_ROLLBACK: AuditEvent.Action.AUTO_ROLLBACK,
}


def deployment_requested(deployment: Deployment, user: Any) -> None:
    """A person (or, for an auto-rollback, the dashboard) asked for it."""
    detail = {"undoes": deployment.undoes_id} if deployment.undoes_id else None
    audit_record(
        actor=user,
        action=_REQUESTED[Deployment.Kind(deployment.kind)],
        deployment=deployment,
        reason=deployment.reason,
        result=deployment.status,
        detail=detail,
        actor_name=None if user is not None else "modeldeck",
    )
    if deployment.status == Deployment.Status.AWAITING_APPROVAL:
        deployment_changed(deployment, "deployment.awaiting_approval")


def deployment_decided(deployment: Deployment, user: Any, *, approved: bool) -> None:
    audit_record(
        actor=user,
        action=AuditEvent.Action.APPROVE if approved else AuditEvent.Action.REJECT,
        deployment=deployment,
        reason=deployment.decision_reason,
        result=deployment.status,
    )


def deployment_aborted(deployment: Deployment, user: Any) -> None:
    audit_record(
        actor=user,
        action=AuditEvent.Action.ABORT,
        deployment=deployment,
        reason=deployment.abort_reason,
        result=deployment.status,
    )


def deployment_changed(deployment: Deployment, event: str) -> None:
    """``event``: deployment.started, deployment.awaiting_approval ..."""
    webhooks_emit(environment=deployment.environment, event=event, deployment=deployment)


def deployment_finished(deployment: Deployment) -> None:
    audit_record(
        actor=None,
        actor_name="modeldeck",
        action=AuditEvent.Action.DEPLOYMENT_FINISHED,
        deployment=deployment,
        result=deployment.status,
        detail={"error": deployment.error[:2000]} if deployment.error else None,
    )
    event = FINAL_EVENTS.get(Deployment.Status(deployment.status))
    if event is not None:
        deployment_changed(deployment, event)


def environment_rules_changed(
    environment: Environment, user: Any, changes: dict[str, tuple[Any, Any]]
) -> None:
    audit_record(
        actor=user,
        action=AuditEvent.Action.ENVIRONMENT_RULES,
        environment=environment,
        detail={
            "changed": {name: {"from": old, "to": new} for name, (old, new) in changes.items()}
        },
    )


def pointer_restored(
    environment: Environment, user: Any, *, version: str, parameter_version: int
) -> None:
    audit_record(
        actor=user,
        action=AuditEvent.Action.POINTER_RESTORE,
        environment=environment,
        version=version,
        detail={"parameter_version": parameter_version},
    )


def pointer_changed_outside(
    environment: Environment,
    *,
    parameter_version: int,
    version: str,
    sha256: str,
    modified_by: str,
) -> None:
    """SSM's history shows a pointer version no deployment wrote."""
    logger.warning(
        "%s: pointer changed outside the dashboard (SSM version %s, by %s)",
        environment,
        parameter_version,
        modified_by or "unknown",
    )
    audit_record(
        actor=None,
        actor_name=modified_by or "unknown (SSM)",
        action=AuditEvent.Action.POINTER_EXTERNAL,
        environment=environment,
        version=version[:64],
        detail={"parameter_version": parameter_version, "sha256": sha256},
    )


def drift_detected(
    environment: Environment, *, drift: dict[str, Any], deployed: Deployment | None
) -> None:
    webhooks_emit(
        environment=environment,
        event="drift.detected",
        deployment=deployed,
        extra={"drift": drift},
    )
