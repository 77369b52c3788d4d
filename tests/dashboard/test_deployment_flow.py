"""The deployment state machine run against the App Runner stand-in and the
embedded AWS: pinned revisions, verification, App Runner's own rollback,
auto-rollback, restore, crash recovery (a step repeated after a worker died
never deploys twice), timeouts, rollback to the exact stored pointer, and
faults injected at the network edge."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from django.utils import timezone

from dashboard.aws import apprunner, s3, ssm
from dashboard.aws.clients import reset_clients
from dashboard.deployments.models import Deployment, PointerWrite
from dashboard.deployments.reconciler import deployment_advance, deployments_reconcile
from dashboard.deployments.services import (
    DeploymentConflict,
    DeploymentError,
    deployment_rollback,
    deployment_start,
)
from tests.faultproxy import FaultProxy

PARAMETER = "/models/iris/staging"


def served(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/version", timeout=5).json())


def pointer_now() -> dict[str, Any]:
    return dict(json.loads(ssm.get_parameter(name=PARAMETER) or "{}"))


def pin_now(arn: str) -> str | None:
    service = apprunner.describe_service(service_arn=arn)
    return service.environment_variables().get("MODEL_SSM_PARAMETER")


def updates_of(arn: str) -> list[str]:
    return [o.id for o in apprunner.list_operations(service_arn=arn) if o.type == "UPDATE_SERVICE"]


def request(stack: dict[str, Any], user: Any, version: str, capture: Any) -> Deployment:
    with capture(execute=False):
        return deployment_start(
            environment=stack["environment"], version=version, user=user, reason="test"
        )


def run_to_end(deployment_id: int, timeout: float = 60.0) -> Deployment:
    """Advance the deployment as the reconciler would, until it is final (or
    its next deployment, an auto-rollback, is)."""
    deadline = time.monotonic() + timeout
    while True:
        deployment_advance(deployment_id=deployment_id)
        deployment = Deployment.objects.get(pk=deployment_id)
        if deployment.status in Deployment.FINAL:
            return deployment
        if time.monotonic() > deadline:
            raise AssertionError(
                f"deployment {deployment_id} still {deployment.status}/{deployment.step}: "
                + "; ".join(e.message for e in deployment.events.all())
            )
        time.sleep(0.05)


def messages(deployment: Deployment) -> list[str]:
    return [e.message for e in deployment.events.all()]


def test_promote_pins_the_pointer_version_and_goes_live(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    arn = deploy_stack["arn"]
    assert served(deploy_stack["url"])["version"] == "1.0"
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    assert deployment.status == "pending" and pointer_now()["version"] == "1.0"  # nothing yet
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "succeeded", deployment.error
    assert deployment.live_version == "1.1" and deployment.live_sha256 == deployment.sha256
    assert deployment.live_at and deployment.finished_at and deployment.started_at
    # The revision pins exactly the SSM version holding this pointer.
    assert pin_now(arn) == f"{PARAMETER}:{deployment.parameter_version}"
    pinned = ssm.get_parameter_version(name=PARAMETER, version=deployment.parameter_version)
    assert pinned is not None and json.loads(pinned.value) == deployment.pointer
    assert pointer_now()["version"] == "1.1"  # and the unversioned pointer is what is promoted
    assert served(deploy_stack["url"])["sha256"] == deployment.sha256
    assert len(updates_of(arn)) == 1
    assert PointerWrite.objects.filter(
        parameter_version=deployment.parameter_version, deployment=deployment
    ).exists()
    text = " | ".join(messages(deployment))
    assert "SUCCEEDED" in text and "verified" in text
    deployment.environment.refresh_from_db()
    assert deployment.environment.promoted_version == "1.1"


def test_app_runner_rolls_back_an_unhealthy_version_and_the_pointer_follows(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    arn = deploy_stack["arn"]
    pin_before = pin_now(arn)
    deployment = request(
        deploy_stack, personas["deployer"], "2.0-broken", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back"
    assert "never became healthy" in deployment.error
    assert served(deploy_stack["url"])["version"] == "1.0"  # the old revision kept serving
    assert pin_now(arn) == pin_before  # App Runner kept the previous configuration
    assert pointer_now()["version"] == "1.0"  # and SSM names what is live again
    assert PointerWrite.objects.filter(deployment=deployment, purpose="restore").exists()
    operation = apprunner.get_operation(service_arn=arn, operation_id=deployment.operation_id)
    assert operation is not None and operation.status == "ROLLBACK_SUCCEEDED"


def test_a_service_serving_another_sha256_is_rolled_back_automatically(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.DEPLOYMENT_VERIFY_SECONDS = 1.0
    settings.DEPLOYMENT_VERIFY_POLL_SECONDS = 0.1
    from tests.conftest import publish

    publish("iris", "1.2-liar", deploy_stack["tmp_path"])
    deployment = request(
        deploy_stack, personas["deployer"], "1.2-liar", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back", deployment.error
    assert "verification failed" in deployment.error and "0000" in deployment.error
    rollback = Deployment.objects.get(undoes=deployment)
    assert rollback.kind == "auto_rollback" and rollback.to_version == "1.0"
    assert rollback.requested_by_name == "modeldeck"
    rollback = run_to_end(rollback.pk)
    assert rollback.status == "succeeded", rollback.error
    assert served(deploy_stack["url"])["version"] == "1.0"
    assert pointer_now()["version"] == "1.0"
    assert pin_now(deploy_stack["arn"]) == f"{PARAMETER}:{rollback.parameter_version}"


def test_a_deleted_artifact_fails_before_anything_changes(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    pointer = deployment.pointer
    # Someone deletes that exact object version behind the registry's back.
    from dashboard.aws.clients import client

    client("s3").delete_object(
        Bucket=pointer["bucket"], Key=pointer["key"], VersionId=pointer["s3_version_id"]
    )
    parameter_before = ssm.get_parameter_version(name=PARAMETER)
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "failed" and "no longer exists" in deployment.error
    assert ssm.get_parameter_version(name=PARAMETER) == parameter_before
    assert updates_of(deploy_stack["arn"]) == []
    assert served(deploy_stack["url"])["version"] == "1.0"


def test_a_repeated_start_after_a_crash_adopts_the_operation(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A worker sent UpdateService and died before recording the operation: the
    next worker finds it (the service already runs the pin) and follows it."""
    arn = deploy_stack["arn"]
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment_advance(deployment_id=deployment.pk, max_steps=1)  # write_pointer only
    deployment.refresh_from_db()
    assert deployment.step == "start" and deployment.parameter_version
    # What the dead worker did, through the same API: mark, then UpdateService.
    from dashboard.deployments.targets.apprunner import AppRunnerTarget

    Deployment.objects.filter(pk=deployment.pk).update(
        start_requested_at=timezone.now(),
        claim_token="dead-worker",
        claimed_until=timezone.now() - timezone.timedelta(seconds=1),  # its lease lapsed
    )
    operation_id = AppRunnerTarget(service_arn=arn).start(
        pin=f"{PARAMETER}:{deployment.parameter_version}"
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "succeeded", deployment.error
    assert deployment.operation_id == operation_id
    assert updates_of(arn) == [operation_id]  # never a second UpdateService
    assert any("started earlier" in m for m in messages(deployment))


def test_a_held_claim_is_left_alone_and_a_lapsed_one_is_taken(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    held_until = timezone.now() + timezone.timedelta(minutes=1)
    Deployment.objects.filter(pk=deployment.pk).update(
        claim_token="live-worker", claimed_until=held_until
    )
    assert deployment_advance(deployment_id=deployment.pk) == "pending"
    deployment.refresh_from_db()
    assert deployment.claim_token == "live-worker" and deployment.parameter_version is None
    assert deployments_reconcile() == []  # nor does the reconciler queue it
    Deployment.objects.filter(pk=deployment.pk).update(
        claimed_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    assert run_to_end(deployment.pk).status == "succeeded"


def test_a_step_that_lost_its_claim_records_nothing(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments import reconciler

    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    token = reconciler._claim(deployment.pk)
    assert token is not None
    Deployment.objects.filter(pk=deployment.pk).update(claim_token="someone-else")
    transition = reconciler.Transition(updates={"step": "follow"}, finish="failed")
    with pytest.raises(reconciler._LostClaim):
        reconciler._apply(deployment, token, transition)
    deployment.refresh_from_db()
    assert deployment.status == "pending" and deployment.step == "write_pointer"


def test_busy_service_waits_then_deploys(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    arn = deploy_stack["arn"]
    # Someone else's operation is running on the service (a console redeploy).
    from dashboard.aws.clients import client

    client("apprunner").start_deployment(ServiceArn=arn)
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "succeeded", deployment.error
    assert any("busy" in m for m in messages(deployment))
    assert len(updates_of(arn)) == 1


def test_a_timed_out_operation_is_followed_to_its_end_and_undone(
    deploy_stack: Any,
    personas: Any,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.conftest import publish

    publish("iris", "1.3-slow", deploy_stack["tmp_path"])
    settings.DEPLOYMENT_TIMEOUT_SECONDS = 1
    deployment = request(
        deploy_stack, personas["deployer"], "1.3-slow", django_capture_on_commit_callbacks
    )
    deployment = run_to_end(deployment.pk)
    # It timed out, the operation went on and succeeded, and it was undone.
    assert deployment.status == "rolled_back", deployment.error
    assert "timed out" in deployment.error
    text = " | ".join(messages(deployment))
    assert "SUCCEEDED" in text
    rollback = Deployment.objects.get(undoes=deployment)
    settings.DEPLOYMENT_TIMEOUT_SECONDS = 60
    assert run_to_end(rollback.pk).status == "succeeded"
    assert served(deploy_stack["url"])["version"] == "1.0"
    assert pointer_now()["version"] == "1.0"


def test_rollback_redeploys_the_exact_pointer_and_goes_further_back_each_time(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.conftest import publish

    publish("iris", "1.2", deploy_stack["tmp_path"])
    environment = deploy_stack["environment"]
    first = run_to_end(
        request(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks).pk
    )
    second = run_to_end(
        request(deploy_stack, personas["deployer"], "1.2", django_capture_on_commit_callbacks).pk
    )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    # The version 1.1 is deleted from the list (its S3 object version stays).
    from dashboard.registry.models import ModelVersion

    ModelVersion.objects.filter(model_name="iris", version="1.1").delete()
    with pytest.raises(DeploymentError, match="reason"):
        deployment_rollback(environment=environment, user=personas["deployer"], reason=" ")
    with django_capture_on_commit_callbacks(execute=False):
        back = deployment_rollback(
            environment=environment, user=personas["deployer"], reason="1.2 is slow"
        )
    assert (back.kind, back.from_version, back.to_version) == ("rollback", "1.2", "1.1")
    for field in ("s3_version_id", "sha256", "key"):
        assert back.pointer[field] == first.pointer[field]
    assert run_to_end(back.pk).status == "succeeded"
    assert served(deploy_stack["url"])["sha256"] == first.sha256
    # Again: one further back (to the seeded 1.0), never forth to 1.2.
    with django_capture_on_commit_callbacks(execute=False):
        again = deployment_rollback(
            environment=environment, user=personas["deployer"], reason="still bad"
        )
    assert again.to_version == "1.0"
    assert run_to_end(again.pk).status == "succeeded"
    with pytest.raises(DeploymentError, match="nothing earlier"):
        deployment_rollback(environment=environment, user=personas["deployer"], reason="more")


def test_a_redeploy_of_the_live_version_rolls_back_to_the_one_before(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Promoting what is already live (a drift fix, a repeated promote) must
    not make the rollback offer "1.1 -> 1.1" (found by QA)."""
    from dashboard.deployments.selectors import rollback_plan

    environment = deploy_stack["environment"]
    first = run_to_end(
        request(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks).pk
    )
    again = run_to_end(
        request(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks).pk
    )
    assert (first.status, again.status) == ("succeeded", "succeeded")
    plan = rollback_plan(environment=environment)
    assert plan is not None and plan.live.pk == again.pk
    assert plan.pointer["version"] == "1.0" == first.rollback_pointer["version"]
    with django_capture_on_commit_callbacks(execute=False):
        back = deployment_rollback(
            environment=environment, user=personas["deployer"], reason="1.1 is slow"
        )
    assert (back.from_version, back.to_version) == ("1.1", "1.0")


def test_rollback_refuses_a_pinned_object_that_is_gone(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    first = run_to_end(
        request(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks).pk
    )
    target = first.rollback_pointer
    assert target is not None and target["version"] == "1.0"
    from dashboard.aws.clients import client

    client("s3").delete_object(
        Bucket=target["bucket"], Key=target["key"], VersionId=target["s3_version_id"]
    )
    with pytest.raises(DeploymentError, match="no longer exists"):
        deployment_rollback(
            environment=deploy_stack["environment"], user=personas["deployer"], reason="x"
        )
    assert s3.head_object(bucket=target["bucket"], key=target["key"]) is None


def test_no_second_deployment_while_one_is_in_flight(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    request(deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks)
    with pytest.raises(DeploymentConflict):
        request(deploy_stack, personas["admin"], "1.0", django_capture_on_commit_callbacks)


def test_ssm_refusing_the_restore_keeps_the_environment_locked_with_an_alert(
    deploy_stack: Any,
    personas: Any,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.DEPLOYMENT_RETRY_MAX_SECONDS = 0.2
    with FaultProxy(deploy_stack["aws"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        reset_clients()
        deployment = request(
            deploy_stack, personas["deployer"], "2.0-broken", django_capture_on_commit_callbacks
        )
        # Let it write its pointer, then SSM starts refusing writes.
        deployment_advance(deployment_id=deployment.pk, max_steps=1)
        refusal = proxy.fail(
            target="AmazonSSM.PutParameter",
            times=-1,
            code="AccessDeniedException",
            message="not authorized to perform ssm:PutParameter",
        )
        deadline = time.monotonic() + 60
        while refusal.hits < 3:
            assert time.monotonic() < deadline, messages(deployment)
            deployment_advance(deployment_id=deployment.pk)
            time.sleep(0.05)
        deployment.refresh_from_db()
        assert deployment.status == "in_progress" and deployment.step == "restore"
        assert "SSM refused to restore" in deployment.alert
        with pytest.raises(DeploymentConflict):  # not released meanwhile
            request(deploy_stack, personas["admin"], "1.1", django_capture_on_commit_callbacks)
        proxy.clear()
        deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back" and deployment.alert == ""
    assert pointer_now()["version"] == "1.0"


def test_transient_throttling_and_5xx_are_retried_invisibly(
    deploy_stack: Any,
    personas: Any,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    settings.AWS_MAX_ATTEMPTS = 4
    with (
        FaultProxy(deploy_stack["aws"]) as aws_proxy,
        FaultProxy(deploy_stack["endpoint"]) as runner_proxy,
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_APPRUNNER", runner_proxy.url)
        reset_clients()
        aws_proxy.fail(target="AmazonSSM.PutParameter", times=2, code="ThrottlingException")
        aws_proxy.fail(target="AmazonSSM.GetParameter", times=1, status=500, code="InternalError")
        runner_proxy.fail(
            target="AppRunner.UpdateService",
            times=1,
            status=500,
            code="InternalServiceErrorException",
        )
        runner_proxy.fail(target="AppRunner.ListOperations", times=2, code="ThrottlingException")
        deployment = request(
            deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
        )
        deployment = run_to_end(deployment.pk)
        assert deployment.status == "succeeded", deployment.error
        assert deployment.alert == "" and deployment.error == ""
        assert len(updates_of(deploy_stack["arn"])) == 1
        assert aws_proxy.rules[0].hits == 2 and runner_proxy.rules[0].hits == 1
    assert served(deploy_stack["url"])["version"] == "1.1"


def test_stopping_a_pending_deployment_changes_nothing(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments.services import deployment_abort

    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    with pytest.raises(DeploymentError, match="reason"):
        deployment_abort(deployment_id=deployment.pk, user=personas["deployer"], reason="")
    with django_capture_on_commit_callbacks(execute=False):
        deployment_abort(deployment_id=deployment.pk, user=personas["admin"], reason="wrong one")
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "failed" and "aborted by admin: wrong one" in deployment.error
    assert pointer_now()["version"] == "1.0" and updates_of(deploy_stack["arn"]) == []
    with pytest.raises(DeploymentConflict, match="nothing to stop"):
        deployment_abort(deployment_id=deployment.pk, user=personas["admin"], reason="again")


def test_stopping_an_app_runner_operation_follows_it_then_rolls_back(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from dashboard.deployments.services import deployment_abort
    from tests.conftest import publish

    publish("iris", "1.3-slow", deploy_stack["tmp_path"])
    deployment = request(
        deploy_stack, personas["deployer"], "1.3-slow", django_capture_on_commit_callbacks
    )
    deadline = time.monotonic() + 30
    while deployment.step != "follow":
        assert time.monotonic() < deadline
        deployment_advance(deployment_id=deployment.pk)
        deployment.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        deployment_abort(deployment_id=deployment.pk, user=personas["deployer"], reason="too slow")
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back" and "aborted by deployer" in deployment.error
    assert any("cannot stop" in m for m in messages(deployment))
    rollback = Deployment.objects.get(undoes=deployment)
    assert run_to_end(rollback.pk).status == "succeeded"
    assert served(deploy_stack["url"])["version"] == "1.0"
    assert pointer_now()["version"] == "1.0"


def _bake_setup(stack: dict[str, Any], admin: Any, settings: Any) -> list[str]:
    from dashboard.monitoring.services import monitoring_settings_update

    settings.MONITORING_ALARM_CACHE_SECONDS = 0
    row = monitoring_settings_update(
        environment=stack["environment"],
        user=admin,
        values={"alarms_enabled": True, "bake_minutes": 1},
    )
    return list(row.alarm_names)


def _until_baking(deployment: Deployment) -> Deployment:
    deadline = time.monotonic() + 60
    while deployment.status != "baking":
        assert deployment.status not in Deployment.FINAL, messages(deployment)
        assert time.monotonic() < deadline, deployment.status
        deployment_advance(deployment_id=deployment.pk)
        deployment.refresh_from_db()
        time.sleep(0.05)
    return deployment


def test_an_alarm_during_the_bake_window_rolls_back(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    from dashboard.monitoring.services import alarm_state_set

    alarms = _bake_setup(deploy_stack, personas["admin"], settings)
    assert alarms
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment = _until_baking(deployment)
    assert deployment.bake_until is not None and served(deploy_stack["url"])["version"] == "1.1"
    # What CloudWatch does when 5xx responses pass the threshold (SetAlarmState:
    # AWS's own way to test what an alarm sets off).
    alarm_state_set(
        environment=deploy_stack["environment"],
        name=alarms[0],
        state="ALARM",
        reason="Threshold Crossed: 5xx rate 42% > 5%",
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "rolled_back"
    assert alarms[0] in deployment.error and "bake window" in deployment.error
    rollback = Deployment.objects.get(undoes=deployment)
    assert rollback.kind == "auto_rollback" and alarms[0] in rollback.reason
    alarm_state_set(
        environment=deploy_stack["environment"], name=alarms[0], state="OK", reason="recovered"
    )
    assert run_to_end(rollback.pk).status == "succeeded"
    assert served(deploy_stack["url"])["version"] == "1.0" and pointer_now()["version"] == "1.0"


def test_a_quiet_bake_window_ends_in_success(
    deploy_stack: Any, personas: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    _bake_setup(deploy_stack, personas["admin"], settings)
    deployment = request(
        deploy_stack, personas["deployer"], "1.1", django_capture_on_commit_callbacks
    )
    deployment = _until_baking(deployment)
    assert deployment_advance(deployment_id=deployment.pk) == "baking"  # not over yet
    # The minute passes (moved, not waited for).
    Deployment.objects.filter(pk=deployment.pk).update(
        bake_until=timezone.now(), next_step_at=timezone.now()
    )
    deployment = run_to_end(deployment.pk)
    assert deployment.status == "succeeded"
    assert any("bake window passed" in m for m in messages(deployment))
