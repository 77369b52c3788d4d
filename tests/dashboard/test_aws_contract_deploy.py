"""Contract tests of the deployment calls (App Runner UpdateService and
operations, SSM versions and history), checked by botocore's Stubber against
the service models of the pinned botocore: every operation status App Runner
documents, and its two ways of saying "busy"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from dashboard.aws import ssm
from dashboard.aws.clients import client, reset_clients
from dashboard.aws.errors import AwsTransientError
from dashboard.deployments.targets import Phase, TargetBusy, TargetError
from dashboard.deployments.targets.apprunner import AppRunnerTarget

ARN = (
    "arn:aws:apprunner:us-east-1:000000000000:service/iris-staging/0123456789abcdef0123456789abcdef"
)
OP = "6f1c2a9e-1111-4c3b-9d1e-0123456789ab"
OTHER = "6f1c2a9e-2222-4c3b-9d1e-0123456789ab"
OLDER = "6f1c2a9e-3333-4c3b-9d1e-0123456789ab"
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
IMAGE = {
    "ImageIdentifier": "123456789012.dkr.ecr.us-east-1.amazonaws.com/inference:abc123",
    "ImageConfiguration": {
        "RuntimeEnvironmentVariables": {
            "MODEL_SSM_PARAMETER": "/models/iris/staging:6",
            "MODEL_CACHE_DIR": "/tmp/models",
        },
        "RuntimeEnvironmentSecrets": {
            "INFERENCE_API_KEYS": "arn:aws:secretsmanager:us-east-1:123456789012:secret:keys-AbCdEf"
        },
        "StartCommand": "python -m inference",
        "Port": "8080",
    },
    "ImageRepositoryType": "ECR",
}
HEALTH = {
    "Protocol": "HTTP",
    "Path": "/readyz",
    "Interval": 5,
    "Timeout": 2,
    "HealthyThreshold": 1,
    "UnhealthyThreshold": 5,
}


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_APPRUNNER", raising=False)
    reset_clients()
    yield
    reset_clients()


def stub(service: str) -> Stubber:
    stubber = Stubber(client(service))
    stubber.activate()
    return stubber


def service(status: str = "RUNNING", image: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "Service": {
            "ServiceName": "iris-staging",
            "ServiceId": "0123456789abcdef0123456789abcdef",
            "ServiceArn": ARN,
            "ServiceUrl": "abc.us-east-1.awsapprunner.com",
            "CreatedAt": NOW,
            "UpdatedAt": NOW,
            "Status": status,
            "SourceConfiguration": {
                "ImageRepository": image or IMAGE,
                "AutoDeploymentsEnabled": False,
                "AuthenticationConfiguration": {
                    "AccessRoleArn": "arn:aws:iam::123456789012:role/apprunner-ecr"
                },
            },
            "InstanceConfiguration": {"Cpu": "1024", "Memory": "2048"},
            "HealthCheckConfiguration": HEALTH,
            "AutoScalingConfigurationSummary": {},
            "NetworkConfiguration": {},
        }
    }


def test_start_sends_the_full_configuration_with_only_the_pin_changed() -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service(), {"ServiceArn": ARN})
    pinned = {
        **IMAGE,
        "ImageConfiguration": {
            **IMAGE["ImageConfiguration"],
            "RuntimeEnvironmentVariables": {
                "MODEL_SSM_PARAMETER": "/models/iris/staging:7",
                "MODEL_CACHE_DIR": "/tmp/models",
            },
        },
    }
    stubber.add_response(
        "update_service",
        {**service("OPERATION_IN_PROGRESS"), "OperationId": OP},
        {
            "ServiceArn": ARN,
            "SourceConfiguration": {
                "ImageRepository": pinned,
                "AutoDeploymentsEnabled": False,
                "AuthenticationConfiguration": {
                    "AccessRoleArn": "arn:aws:iam::123456789012:role/apprunner-ecr"
                },
            },
            "HealthCheckConfiguration": HEALTH,
        },
    )
    assert AppRunnerTarget(service_arn=ARN).start(pin="/models/iris/staging:7") == OP
    stubber.assert_no_pending_responses()


def test_describe_reports_the_pin_and_whether_it_is_busy() -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service("OPERATION_IN_PROGRESS"), {"ServiceArn": ARN})
    revision = AppRunnerTarget(service_arn=ARN).describe()
    assert revision.pin == "/models/iris/staging:6" and revision.busy
    assert revision.url == "https://abc.us-east-1.awsapprunner.com"


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("InvalidStateException", "Service is in OPERATION_IN_PROGRESS state", TargetBusy),
        (
            "InvalidRequestException",
            "You can't perform this action when the service is in OPERATION_IN_PROGRESS state",
            TargetBusy,
        ),
        ("InvalidRequestException", "1 validation error detected", TargetError),
        ("ResourceNotFoundException", "Service not found", TargetError),
    ],
)
def test_update_refusals(code: str, message: str, expected: type[Exception]) -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service(), {"ServiceArn": ARN})
    stubber.add_client_error("update_service", code, message, 400)
    with pytest.raises(expected):
        AppRunnerTarget(service_arn=ARN).start(pin="/models/iris/staging:7")


def test_internal_errors_are_transient() -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service(), {"ServiceArn": ARN})
    for _ in range(5):  # the standard retry mode tries first
        stubber.add_client_error("update_service", "InternalServiceErrorException", "oops", 500)
    with pytest.raises(AwsTransientError):
        AppRunnerTarget(service_arn=ARN).start(pin="/models/iris/staging:7")


def test_a_busy_service_is_not_even_asked() -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service("OPERATION_IN_PROGRESS"), {"ServiceArn": ARN})
    with pytest.raises(TargetBusy):
        AppRunnerTarget(service_arn=ARN).start(pin="/models/iris/staging:7")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    "variables, secrets, needle",
    [
        ({}, {}, "no MODEL_SSM_PARAMETER"),
        (
            {"MODEL_SSM_PARAMETER": "/models/iris/staging"},
            {"MODEL_POINTER": "arn:aws:ssm:us-east-1:123456789012:parameter/models/iris/staging"},
            "MODEL_POINTER",
        ),
    ],
)
def test_a_service_that_cannot_be_pinned_is_refused(
    variables: dict[str, str], secrets: dict[str, str], needle: str
) -> None:
    image = {
        **IMAGE,
        "ImageConfiguration": {
            "RuntimeEnvironmentVariables": variables,
            "RuntimeEnvironmentSecrets": secrets,
            "Port": "8080",
        },
    }
    stubber = stub("apprunner")
    stubber.add_response("describe_service", service(image=image), {"ServiceArn": ARN})
    with pytest.raises(TargetError, match=needle):
        AppRunnerTarget(service_arn=ARN).start(pin="/models/iris/staging:7")


def operation(status: str, kind: str = "UPDATE_SERVICE", started: dt.datetime = NOW) -> Any:
    item: dict[str, Any] = {
        "Id": OP,
        "Type": kind,
        "Status": status,
        "TargetArn": ARN,
        "StartedAt": started,
        "UpdatedAt": started,
    }
    if status not in {"PENDING", "IN_PROGRESS", "ROLLBACK_IN_PROGRESS"}:
        item["EndedAt"] = started + dt.timedelta(minutes=4)
    return item


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("PENDING", Phase.RUNNING),
        ("IN_PROGRESS", Phase.RUNNING),
        ("ROLLBACK_IN_PROGRESS", Phase.RUNNING),
        ("SUCCEEDED", Phase.SUCCEEDED),
        ("ROLLBACK_SUCCEEDED", Phase.ROLLED_BACK),
        ("FAILED", Phase.FAILED),
        ("ROLLBACK_FAILED", Phase.FAILED),
    ],
)
def test_every_operation_status_has_a_phase(status: str, phase: Phase) -> None:
    model = client("apprunner").meta.service_model
    assert status in model.shape_for("OperationStatus").enum
    stubber = stub("apprunner")
    stubber.add_response(
        "list_operations",
        {"OperationSummaryList": [operation(status)]},
        {"ServiceArn": ARN, "MaxResults": 20},
    )
    state = AppRunnerTarget(service_arn=ARN).poll(operation_id=OP)
    assert state is not None and (state.phase, state.status) == (phase, status)


def test_every_documented_status_is_mapped() -> None:
    from dashboard.deployments.targets.apprunner import _PHASES

    model = client("apprunner").meta.service_model
    assert set(model.shape_for("OperationStatus").enum) == set(_PHASES)


def test_find_started_adopts_only_a_deploying_operation_since_the_mark() -> None:
    stubber = stub("apprunner")
    earlier = NOW - dt.timedelta(minutes=10)
    stubber.add_response(
        "list_operations",
        {
            "OperationSummaryList": [
                {**operation("IN_PROGRESS", kind="PAUSE_SERVICE"), "Id": OTHER},
                {**operation("SUCCEEDED", started=earlier), "Id": OLDER},
            ]
        },
        {"ServiceArn": ARN, "MaxResults": 20},
    )
    assert (
        AppRunnerTarget(service_arn=ARN).find_started(since=NOW - dt.timedelta(minutes=1)) is None
    )
    stubber.add_response(
        "list_operations",
        {"OperationSummaryList": [operation("IN_PROGRESS")]},
        {"ServiceArn": ARN, "MaxResults": 20},
    )
    assert AppRunnerTarget(service_arn=ARN).find_started(since=NOW - dt.timedelta(minutes=1)) == OP


def test_ssm_version_selector_and_history_pages() -> None:
    stubber = stub("ssm")
    stubber.add_response(
        "get_parameter",
        {
            "Parameter": {
                "Name": "/models/iris/staging",
                "Type": "String",
                "Value": "{}",
                "Version": 7,
                "Selector": ":7",
            }
        },
        {"Name": "/models/iris/staging:7"},
    )
    stubber.add_client_error(
        "get_parameter",
        "ParameterVersionNotFound",
        "no version 9",
        400,
        expected_params={"Name": "/models/iris/staging:9"},
    )
    found = ssm.get_parameter_version(name="/models/iris/staging", version=7)
    assert found is not None and found.version == 7
    assert ssm.get_parameter_version(name="/models/iris/staging", version=9) is None

    def entry(version: int) -> dict[str, Any]:
        return {
            "Name": "/models/iris/staging",
            "Type": "String",
            "Value": f'{{"version": "{version}"}}',
            "Version": version,
            "LastModifiedDate": NOW,
            "LastModifiedUser": "arn:aws:iam::123456789012:user/alice",
        }

    stubber.add_response(
        "get_parameter_history",
        {"Parameters": [entry(1), entry(2)], "NextToken": "t"},
        {"Name": "/models/iris/staging", "MaxResults": 50},
    )
    stubber.add_response(
        "get_parameter_history",
        {"Parameters": [entry(3)]},
        {"Name": "/models/iris/staging", "MaxResults": 50, "NextToken": "t"},
    )
    history = ssm.get_parameter_history(name="/models/iris/staging")
    assert [h.version for h in history] == [3, 2, 1]
    assert history[0].modified_by.endswith("user/alice")
    stubber.add_client_error("get_parameter_history", "ParameterNotFound", "no", 400)
    assert ssm.get_parameter_history(name="/models/iris/staging") == []
