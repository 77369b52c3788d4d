"""The stand-in's ECS view (devstack/apprunner/ecs_api.py) through an
unmodified boto3 ``ecs`` client: every answer is checked against the output
shape of botocore's ECS model (as Stubber checks canned answers), and every
refusal has the error code the model lists for that operation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters

from tests.devstack.test_apprunner import Stack, StackStarter, eventually, fake_service

ACTIVE = ["PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"]


class Ecs:
    """A boto3 ECS client whose every answer is checked against the model."""

    def __init__(self, endpoint_url: str) -> None:
        self.client = boto3.client(
            "ecs",
            endpoint_url=endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.client, method)
        model = self.client.meta.service_model
        operation = model.operation_model(self.client.meta.method_to_api_mapping[method])

        def checked(**params: Any) -> dict[str, Any]:
            answer = dict(call(**params))
            answer.pop("ResponseMetadata", None)
            validate_parameters(answer, operation.output_shape)
            return answer

        return checked


@pytest.fixture
def ecs_stack(tmp_path: Path) -> Iterator[tuple[Stack, Ecs, str]]:
    with contextlib.ExitStack() as exits:
        stack = StackStarter(tmp_path, exits)(
            fake_service(
                tmp_path,
                "svc-one",
                env={
                    "FAKE_BEHAVIOUR_FILE": str(tmp_path / "svc-one.json"),
                    "FAKE_PID_DIR": str(tmp_path / "pids"),
                    "MODEL_SSM_PARAMETER": "/models/iris/staging:1",
                },
            )
        )
        assert stack.wait_settled("svc-one")["Status"] == "RUNNING"
        yield stack, Ecs(stack.running.endpoint_url), stack.running.ecs_service_arns["svc-one"]


def container(ecs: Ecs, arn: str) -> dict[str, Any]:
    service = ecs.describe_express_gateway_service(serviceArn=arn)["service"]
    return dict(service["activeConfigurations"][-1]["primaryContainer"])


def pinned(primary: dict[str, Any], pin: str) -> dict[str, Any]:
    return {
        **primary,
        "environment": [
            {**e, "value": pin} if e["name"] == "MODEL_SSM_PARAMETER" else e
            for e in primary["environment"]
        ],
    }


def test_an_update_is_a_service_deployment_to_a_new_revision(
    ecs_stack: tuple[Stack, Ecs, str],
) -> None:
    stack, ecs, arn = ecs_stack
    described = ecs.describe_express_gateway_service(serviceArn=arn)["service"]
    assert arn == "arn:aws:ecs:us-east-1:000000000000:service/devstack/svc-one"
    (configuration,) = described["activeConfigurations"]
    assert configuration["ingressPaths"][0]["endpoint"] == stack.url("svc-one")
    assert configuration["healthCheckPath"] == "/readyz"
    before = configuration["serviceRevisionArn"]
    answer = ecs.update_express_gateway_service(
        serviceArn=arn, primaryContainer=pinned(configuration["primaryContainer"], "/m:2")
    )
    target = answer["service"]["targetConfiguration"]["serviceRevisionArn"]
    assert target != before and ":service-revision/devstack/svc-one/" in target

    def ended() -> dict[str, Any] | None:
        listed = ecs.list_service_deployments(service=arn, cluster="devstack")
        newest = listed["serviceDeployments"][0]
        return newest if newest["status"] == "SUCCESSFUL" else None

    brief = eventually(ended, "the deployment to succeed")
    assert brief["targetServiceRevisionArn"] == target
    (deployment,) = ecs.describe_service_deployments(
        serviceDeploymentArns=[brief["serviceDeploymentArn"]]
    )["serviceDeployments"]
    assert deployment["targetServiceRevision"]["requestedProductionTrafficWeight"] == 100.0
    assert deployment["sourceServiceRevisions"][0]["arn"] == before
    assert (
        container(ecs, arn)["environment"]
        == pinned(configuration["primaryContainer"], "/m:2")["environment"]
    )
    revisions = ecs.describe_service_revisions(serviceRevisionArns=[target, before + "0"])
    assert [r["serviceRevisionArn"] for r in revisions["serviceRevisions"]] == [target]
    assert revisions["failures"][0]["reason"] == "MISSING"
    assert ecs.list_service_deployments(service=arn, status=ACTIVE)["serviceDeployments"] == []
    # It has ended: it cannot be stopped any more.
    with pytest.raises(ClientError) as refused:
        ecs.stop_service_deployment(
            serviceDeploymentArn=brief["serviceDeploymentArn"], stopType="ROLLBACK"
        )
    assert refused.value.response["Error"]["Code"] == "ConflictException"


def test_a_running_deployment_is_busy_and_can_be_rolled_back(
    ecs_stack: tuple[Stack, Ecs, str],
) -> None:
    stack, ecs, arn = ecs_stack
    stack.behave("svc-one", mode="never_ready")
    primary = container(ecs, arn)
    ecs.update_express_gateway_service(serviceArn=arn, primaryContainer=pinned(primary, "/m:3"))
    active = ecs.list_service_deployments(service=arn, status=ACTIVE)["serviceDeployments"]
    assert len(active) == 1
    with pytest.raises(ClientError) as busy:
        ecs.update_express_gateway_service(serviceArn=arn, primaryContainer=primary)
    assert busy.value.response["Error"]["Code"] == "ClientException"
    assert "in progress" in busy.value.response["Error"]["Message"]
    configurations = ecs.describe_express_gateway_service(serviceArn=arn)["service"][
        "activeConfigurations"
    ]
    assert len(configurations) == 2  # the old one and the one being deployed
    deployment_arn = active[0]["serviceDeploymentArn"]
    with pytest.raises(ClientError) as abort:
        ecs.stop_service_deployment(serviceDeploymentArn=deployment_arn, stopType="ABORT")
    assert abort.value.response["Error"]["Code"] == "InvalidParameterException"
    ecs.stop_service_deployment(serviceDeploymentArn=deployment_arn, stopType="ROLLBACK")

    def rolled_back() -> dict[str, Any] | None:
        (found,) = ecs.describe_service_deployments(serviceDeploymentArns=[deployment_arn])[
            "serviceDeployments"
        ]
        return found if found["status"] == "ROLLBACK_SUCCESSFUL" else None

    found = eventually(rolled_back, "the rollback")
    assert "StopServiceDeployment" in found["rollback"]["reason"]
    assert container(ecs, arn) == primary
    assert stack.get("svc-one", "/version").json()["version"] == "v0"


def test_refusals_carry_the_model_error_codes(ecs_stack: tuple[Stack, Ecs, str]) -> None:
    _, ecs, arn = ecs_stack
    missing = arn.replace("svc-one", "svc-none")
    cases = [
        (
            lambda: ecs.describe_express_gateway_service(serviceArn=missing),
            "ServiceNotFoundException",
        ),
        (
            lambda: ecs.stop_service_deployment(
                serviceDeploymentArn=arn.replace(":service/", ":service-deployment/") + "/x"
            ),
            "ServiceDeploymentNotFoundException",
        ),
        (
            lambda: ecs.update_express_gateway_service(
                serviceArn=arn,
                primaryContainer={
                    "image": "x",
                    "secrets": [{"name": "K", "valueFrom": "arn:aws:secretsmanager:x"}],
                },
            ),
            "InvalidParameterException",
        ),
        (lambda: ecs.list_clusters(), "InvalidParameterException"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == code
    found = ecs.describe_service_deployments(serviceDeploymentArns=[arn + "/nothing"])
    assert found["failures"][0]["reason"] == "MISSING"
