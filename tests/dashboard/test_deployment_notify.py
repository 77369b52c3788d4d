"""Who hears about a deployment: the audit history records every request,
decision and end; the environment's webhooks get the contract's events,
drift.detected once per drift."""

from __future__ import annotations

import json
import time
from typing import Any

from dashboard.audit.models import AuditEvent
from dashboard.aws import ssm
from dashboard.deployments.models import Deployment
from dashboard.deployments.reconciler import deployment_advance
from dashboard.deployments.services import (
    deployment_approve,
    deployment_start,
    environment_rules_update,
    environments_check_drift,
    environments_refresh_pointers,
)
from dashboard.webhooks.models import WebhookDelivery
from dashboard.webhooks.services import EVENTS, webhook_create


def finish(deployment_id: int) -> Deployment:
    deadline = time.monotonic() + 60
    while True:
        deployment_advance(deployment_id=deployment_id)
        deployment = Deployment.objects.get(pk=deployment_id)
        if deployment.status in Deployment.FINAL:
            return deployment
        assert time.monotonic() < deadline
        time.sleep(0.05)


def delivered(event: str) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in WebhookDelivery.objects.filter(event=event).order_by("id")]


def test_a_promotion_is_audited_and_announced(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    environment = deploy_stack["environment"]
    webhook_create(
        environment=environment,
        url="http://127.0.0.1:9/hook",
        events=list(EVENTS),
        actor=personas["admin"],
    )
    environment_rules_update(
        environment=environment, user=personas["admin"], requires_approval=True
    )
    with django_capture_on_commit_callbacks(execute=False):
        requested = deployment_start(
            environment=environment, version="1.1", user=personas["deployer"], reason="why"
        )
        deployment_approve(deployment_id=requested.pk, user=personas["admin"], reason="ok")
        deployment = finish(requested.pk)
    assert deployment.status == "succeeded"
    actions = list(
        AuditEvent.objects.filter(deployment_id=deployment.pk)
        .order_by("id")
        .values_list("action", "actor_name", "result")
    )
    assert actions == [
        ("promote", "deployer", "awaiting_approval"),
        ("approve", "admin", "pending"),
        ("deployment_finished", "modeldeck", "succeeded"),
    ]
    rules = AuditEvent.objects.get(action="environment_rules")
    assert rules.detail == {"changed": {"requires_approval": {"from": False, "to": True}}}
    for event in ("deployment.awaiting_approval", "deployment.started", "deployment.succeeded"):
        (body,) = delivered(event)
        assert body["deployment"]["id"] == deployment.pk, event
    assert delivered("deployment.succeeded")[0]["deployment"]["status"] == "succeeded"


def test_drift_is_announced_once_and_the_outside_change_audited(
    deploy_stack: Any, personas: Any
) -> None:
    environment = deploy_stack["environment"]
    webhook_create(
        environment=environment,
        url="http://127.0.0.1:9/hook",
        events=["drift.detected"],
        actor=personas["admin"],
    )
    environments_refresh_pointers()
    assert environments_check_drift() == 0  # the seeded pointer, the service agree
    current = json.loads(ssm.get_parameter(name="/models/iris/staging") or "{}")
    ssm.put_parameter(
        name="/models/iris/staging",
        value=json.dumps(dict(current, version="1.1", sha256="e" * 64)),
    )
    assert environments_refresh_pointers() == 1
    outside = AuditEvent.objects.get(action="pointer_external")
    assert outside.version == "1.1" and outside.detail["parameter_version"] == 2
    assert environments_check_drift() == 1
    assert environments_check_drift() == 0  # the same drift is not announced again
    (body,) = delivered("drift.detected")
    assert body["drift"]["pointer_version"] == "1.1" and body["drift"]["live_version"] == "1.0"
    assert body["environment"]["name"] == "staging"
