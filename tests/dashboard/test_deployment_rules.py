"""An environment's rules (role, approvals, reason, freeze), drift between the
pointer, the service and the last deployment, and the pointer's history."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.aws import ssm
from dashboard.deployments.models import Deployment, Environment, PointerChange
from dashboard.deployments.reconciler import deployment_advance, deployments_reconcile
from dashboard.deployments.services import (
    DeploymentConflict,
    DeploymentError,
    DeploymentForbidden,
    deployment_approve,
    deployment_reject,
    deployment_start,
    environment_rules_update,
    environments_refresh_pointers,
    pointer_restore,
)
from tests.conftest import publish
from tests.dashboard.factories import make_environment, token_headers


def make_environment_with(**rules: Any) -> Any:
    environment = make_environment("iris", "staging")
    for name, value in rules.items():
        setattr(environment, name, value)
    environment.save()
    return environment


def promote(environment: Any, user: Any, version: str = "1.1", reason: str = "r") -> Deployment:
    return deployment_start(environment=environment, version=version, user=user, reason=reason)


@pytest.fixture
def approvals(aws: str, db: Any, tmp_path: Path) -> Any:
    for version in ("1.0", "1.1"):
        publish("iris", version, tmp_path)
    return make_environment_with(requires_approval=True, approval_expiry_hours=2)


def test_approval_by_a_second_person_starts_it(
    approvals: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as queued:
        deployment = promote(approvals, personas["deployer"])
    assert deployment.status == "awaiting_approval" and queued == []  # nothing runs yet
    assert deployment.expires_at is not None
    assert deployment_advance(deployment_id=deployment.pk) == "awaiting_approval"
    with pytest.raises(DeploymentConflict, match="someone else"):
        deployment_approve(deployment_id=deployment.pk, user=personas["deployer"])
    with pytest.raises(DeploymentForbidden):
        deployment_approve(deployment_id=deployment.pk, user=personas["viewer"])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        approved = deployment_approve(
            deployment_id=deployment.pk, user=personas["admin"], reason="looks good"
        )
    assert approved.status == "pending" and approved.approved_by_name == "admin"
    assert approved.decision_reason == "looks good" and len(queued) == 1
    with pytest.raises(DeploymentConflict, match="not awaiting"):
        deployment_reject(deployment_id=deployment.pk, user=personas["superuser"])


def test_a_waiting_request_holds_the_environment_and_can_be_rejected(
    approvals: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = promote(approvals, personas["deployer"])
    with pytest.raises(DeploymentConflict, match="in flight"):
        promote(approvals, personas["admin"], "1.0")
    rejected = deployment_reject(deployment_id=deployment.pk, user=personas["admin"], reason="no")
    assert rejected.status == "rejected" and rejected.finished_at is not None
    assert rejected.approved_by_name == "admin" and rejected.decision_reason == "no"
    assert promote(approvals, personas["admin"], "1.0").status == "awaiting_approval"
    assert ssm.get_parameter(name="/models/iris/staging") is None  # nothing was ever written


def test_an_unanswered_request_expires(approvals: Any, personas: Any) -> None:
    deployment = promote(approvals, personas["deployer"])
    Deployment.objects.filter(pk=deployment.pk).update(
        expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    with pytest.raises(DeploymentConflict):
        deployment_approve(deployment_id=deployment.pk, user=personas["admin"])
    deployments_reconcile()
    deployment.refresh_from_db()
    assert deployment.status == "expired" and deployment.finished_at is not None
    assert promote(approvals, personas["deployer"]).status == "awaiting_approval"


def test_approve_and_reject_through_the_api(approvals: Any, personas: Any) -> None:
    client = Client()
    path = "/api/models/iris/environments/staging/promote"
    created = client.post(
        path,
        data=json.dumps({"version": "1.1", "reason": "ci"}),
        content_type="application/json",
        headers=token_headers(personas["deployer"]),
    )
    assert created.status_code == 202 and created.json()["status"] == "awaiting_approval"
    deployment_id = created.json()["id"]

    def decide(user: str, verb: str) -> Any:
        return client.post(
            f"/api/deployments/{deployment_id}/{verb}",
            data=json.dumps({"reason": "ok"}),
            content_type="application/json",
            headers=token_headers(personas[user]),
        )

    assert decide("deployer", "approve").status_code == 409  # one's own request
    assert decide("viewer", "approve").status_code == 403
    assert client.post("/api/deployments/999999/approve").status_code == 401
    missing = client.post(
        "/api/deployments/999999/approve",
        data="",
        content_type="application/json",
        headers=token_headers(personas["admin"]),
    )
    assert missing.status_code == 404
    approved = decide("admin", "approve")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "pending" and approved.json()["approved_by"] == "admin"
    assert decide("superuser", "reject").status_code == 409  # no longer waiting


def test_admin_only_environment(aws: str, db: Any, tmp_path: Path, personas: Any) -> None:
    publish("iris", "1.1", tmp_path)
    environment = make_environment_with(promote_role="admin")
    with pytest.raises(DeploymentForbidden, match="admin"):
        promote(environment, personas["deployer"])
    assert promote(environment, personas["admin"]).status == "pending"


def test_freeze_refuses_promotions(aws: str, db: Any, tmp_path: Path, personas: Any) -> None:
    publish("iris", "1.1", tmp_path)
    environment = make_environment_with(frozen=True, freeze_reason="end of quarter")
    with pytest.raises(DeploymentConflict, match="end of quarter"):
        promote(environment, personas["deployer"])


def test_required_reason(aws: str, db: Any, tmp_path: Path, personas: Any) -> None:
    publish("iris", "1.1", tmp_path)
    environment = make_environment_with(requires_reason=True)
    with pytest.raises(DeploymentError, match="reason"):
        promote(environment, personas["deployer"], reason="   ")
    assert promote(environment, personas["deployer"], reason="fixes #12").reason == "fixes #12"


def test_rules_are_changed_by_admins_only(db: Any, personas: Any) -> None:
    environment = make_environment("iris", "staging")
    with pytest.raises(DeploymentForbidden):
        environment_rules_update(environment=environment, user=personas["deployer"], frozen=True)
    changes = environment_rules_update(
        environment=environment,
        user=personas["admin"],
        frozen=True,
        freeze_reason="release",
        promote_role="deployer",
    )
    assert changes == {"frozen": (False, True), "freeze_reason": ("", "release")}
    with pytest.raises(DeploymentError, match="720"):
        environment_rules_update(
            environment=environment, user=personas["admin"], approval_expiry_hours=0
        )


def test_rules_page_saves_and_refuses_junk(db: Any, personas: Any) -> None:
    make_environment("iris", "staging")
    client = Client()
    client.force_login(personas["admin"])
    url = "/models/iris/environments/staging/settings/"
    page = client.get(url)
    assert page.status_code == 200 and b"requires_approval" in page.content
    bad = client.post(url, {"promote_role": "root", "approval_expiry_hours": "x"})
    assert bad.status_code == 200 and b"Select a valid choice" in bad.content
    good = client.post(
        url,
        {
            "promote_role": "admin",
            "requires_approval": "on",
            "approval_expiry_hours": "4",
            "freeze_reason": "",
        },
    )
    assert good.status_code == 302
    environment = Environment.objects.get(model_name="iris", name="staging")
    assert environment.promote_role == "admin" and environment.requires_approval


def pointer_of(version: str) -> dict[str, Any]:
    """A real pointer to ``version`` (what someone might paste into SSM by hand)."""
    from django.conf import settings

    from dashboard.deployments.pointer import pointer_build
    from dashboard.registry.selectors import version_get

    info = version_get(model="iris", version=version)
    assert info is not None
    return pointer_build(
        info=info, bucket=settings.MODELS_BUCKET, promoted_by="x", reason="", now=timezone.now()
    )


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def finish(deployment: Deployment) -> Deployment:
    deadline = time.monotonic() + 60
    while deployment.status not in Deployment.FINAL:
        assert time.monotonic() < deadline, deployment.status
        deployment_advance(deployment_id=deployment.pk)
        deployment.refresh_from_db()
        time.sleep(0.05)
    return deployment


def test_a_hand_edit_of_the_pointer_is_drift_never_adopted(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    environment = deploy_stack["environment"]
    environments_refresh_pointers()  # first sight: SSM's current version is the start
    with django_capture_on_commit_callbacks(execute=False):
        deployment = promote(environment, personas["deployer"], "1.1")
    deployment = finish(deployment)
    assert deployment.status == "succeeded", deployment.error
    client = Client()
    headers = token_headers(personas["viewer"])
    body = client.get("/api/models/iris/environments", headers=headers).json()[0]
    assert body["drift"] is None and body["deployed_version"] == "1.1"
    # Someone edits the pointer by hand (the console, a script).
    hand = dict(pointer_of("1.0"), promoted_by="mallory")
    edited = ssm.put_parameter(name="/models/iris/staging", value=json.dumps(hand))
    assert environments_refresh_pointers() == 1
    change = PointerChange.objects.get()
    assert change.parameter_version == edited and change.version == "1.0"
    environment.refresh_from_db()
    assert environment.promoted_version == "1.1"  # never silently adopted
    body = client.get("/api/models/iris/environments", headers=headers).json()[0]
    drift = body["drift"]
    assert drift["kind"] == "pointer_changed"
    assert (drift["pointer_version"], drift["live_version"], drift["deployed_version"]) == (
        "1.0",
        "1.1",
        "1.1",
    )
    assert "outside the dashboard" in drift["reason"] and "Restore" in drift["reason"]
    history = client.get("/api/models/iris/environments/staging/history", headers=headers).json()
    assert history[0]["parameter_version"] == edited and history[0]["deployment_id"] is None
    assert history[0]["written_by"] == "outside the dashboard"
    ours = [h for h in history if h["deployment_id"] == deployment.pk]
    assert ours and ours[0]["version"] == "1.1"
    page = Client()
    page.force_login(personas["viewer"])
    html = page.get("/models/iris/environments/staging/").content.decode()
    assert "outside the dashboard" in html and 'data-drift="pointer_changed"' in html
    # The fix: restore the pointer of the live deployment.
    restored = pointer_restore(environment=environment, user=personas["deployer"])
    assert json.loads(ssm.get_parameter(name="/models/iris/staging") or "")["version"] == "1.1"
    body = client.get("/api/models/iris/environments", headers=headers).json()[0]
    assert body["drift"] is None
    history = client.get("/api/models/iris/environments/staging/history", headers=headers).json()
    assert history[0]["parameter_version"] == restored and history[0]["purpose"] == "restore"
    # A pointer that no longer parses is drift too, and the fix offered is the restore.
    ssm.put_parameter(name="/models/iris/staging", value='{"schema": 1, "version": "<b>"}')
    environments_refresh_pointers()
    body = client.get("/api/models/iris/environments", headers=headers).json()[0]
    assert body["pointer_error"] and body["drift"]["kind"] == "pointer_changed"
    assert body["drift"]["pointer_version"] is None
    assert body["drift"]["reason"].endswith("Restore the pointer to 1.1.")
    # A well-formed pointer to a version the registry does not hold: promoting
    # it is not offered as a fix (found by QA).
    ghost = dict(pointer_of("1.0"), version="9.9", key="models/iris/9.9/model.pt")
    ssm.put_parameter(name="/models/iris/staging", value=json.dumps(ghost))
    environments_refresh_pointers()
    drift = client.get("/api/models/iris/environments", headers=headers).json()[0]["drift"]
    assert drift["pointer_version"] == "9.9"
    assert drift["reason"].endswith(
        "Restore the pointer to 1.1 (9.9 is not a valid version of the registry)."
    )


def test_a_service_that_serves_something_else_is_drift(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments.selectors import environment_states

    environment = deploy_stack["environment"]
    with django_capture_on_commit_callbacks(execute=False):
        deployment = finish(promote(environment, personas["deployer"], "1.1"))
    assert deployment.status == "succeeded"
    # Someone repoints the service's revision at the old pointer version by hand.
    from dashboard.deployments.targets.apprunner import AppRunnerTarget

    target = AppRunnerTarget(service_arn=deploy_stack["arn"])
    target.start(pin="/models/iris/staging:1")
    wait_for(lambda: not target.describe().busy)
    (state,) = environment_states([environment])
    assert state.drift is not None and state.drift.kind == "service_differs"
    assert state.drift.live_version == "1.0" and "not 1.1" in state.drift.reason


def test_live_checks_are_cached_for_page_views(
    deploy_stack: Any, personas: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.aws.clients import reset_clients
    from tests.faultproxy import FaultProxy

    settings.ENVIRONMENT_STATE_CACHE_SECONDS = 60
    with FaultProxy(deploy_stack["aws"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        reset_clients()
        client = Client()
        client.force_login(personas["viewer"])
        for _ in range(5):
            assert client.get("/models/iris/").status_code == 200
            assert client.get("/api/models/iris/environments").status_code == 200
        reads = [s for s in proxy.seen if s == "AmazonSSM.GetParameter"]
        assert len(reads) == 1
    reset_clients()


def test_a_service_that_does_not_answer_is_flagged_on_the_page(
    aws: str, db: Any, personas: Any
) -> None:
    # Found by QA: a crashed service showed as grey text only.
    make_environment("iris", "staging", service_url="http://127.0.0.1:9")  # nothing listens
    page = Client()
    page.force_login(personas["viewer"])
    html = page.get("/models/iris/environments/staging/").content.decode()
    assert "data-service-down" in html and "The service is not serving." in html
    assert "/models/iris/environments/staging/logs/" in html
