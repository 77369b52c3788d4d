"""tools/smoke_aws.py against botocore's Stubber: every call it makes is
checked against the pinned service models, and every failure row is driven
by the answer a real account would give."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from tools.smoke_aws import FAIL, OK, Smoke, main, run, table

NOW = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/modeldeck/modeldeck-DashboardRole-ABC"
BUCKET = "modeldeck-modelsbucket-1x2y"
SERVICE_ID = "0123456789abcdef0123456789abcdef"
APPRUNNER_ARN = f"arn:aws:apprunner:us-east-1:{ACCOUNT}:service/modeldeck-iris-staging/{SERVICE_ID}"
ECS_ARN = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/modeldeck/modeldeck-iris-production"
SHA = "a" * 64
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
REVISIONS = f"arn:aws:ecs:us-east-1:{ACCOUNT}:service-revision/modeldeck"


def stack(name: str, outputs: dict[str, str]) -> dict[str, Any]:
    return {
        "StackName": name,
        "CreationTime": NOW,
        "StackStatus": "CREATE_COMPLETE",
        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
    }


BASE_OUTPUTS = {
    "BucketName": BUCKET,
    "DashboardRoleArn": ROLE,
    "PointerPrefix": "/models",
    "ServicePrefix": "modeldeck-",
    "ClusterName": "modeldeck",
}
STAGING = {
    "PointerParameter": "/models/iris/staging",
    "ServiceArn": APPRUNNER_ARN,
    "Target": "apprunner",
}
PRODUCTION = {
    "PointerParameter": "/models/iris/production",
    "ServiceArn": ECS_ARN,
    "Target": "ecs-express",
}


def pointer(**changes: Any) -> str:
    document = {
        "schema": 1,
        "model": "iris",
        "version": "2026.11.3",
        "bucket": BUCKET,
        "key": "models/iris/2026.11.3/model.pt",
        "s3_version_id": "v3",
        "sha256": SHA,
        "size": 2048,
        "format": "torchscript",
        "input": {"shape": [4], "dtype": "float32"},
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not None})


def apprunner_service(
    *, status: str = "RUNNING", path: str = "/readyz", parameter: str = "/models/iris/staging:7"
) -> dict[str, Any]:
    return {
        "Service": {
            "ServiceName": "modeldeck-iris-staging",
            "ServiceId": SERVICE_ID,
            "ServiceArn": APPRUNNER_ARN,
            "ServiceUrl": "abc.us-east-1.awsapprunner.com",
            "CreatedAt": NOW,
            "UpdatedAt": NOW,
            "Status": status,
            "SourceConfiguration": {
                "ImageRepository": {
                    "ImageIdentifier": f"{REGISTRY}/modeldeck/inference:abc",
                    "ImageRepositoryType": "ECR",
                    "ImageConfiguration": {
                        "Port": "8080",
                        "RuntimeEnvironmentVariables": {"MODEL_SSM_PARAMETER": parameter},
                    },
                }
            },
            "InstanceConfiguration": {"Cpu": "1024", "Memory": "2048"},
            "HealthCheckConfiguration": {"Protocol": "HTTP", "Path": path},
            "AutoScalingConfigurationSummary": {},
            "NetworkConfiguration": {},
        }
    }


def ecs_service(
    *,
    status: str = "ACTIVE",
    paths: tuple[str, ...] = ("/readyz",),
    parameter: str = "/models/iris/production:3",
) -> dict[str, Any]:
    return {
        "service": {
            "cluster": "modeldeck",
            "serviceName": "modeldeck-iris-production",
            "serviceArn": ECS_ARN,
            "status": {"statusCode": status},
            "activeConfigurations": [
                {
                    "serviceRevisionArn": f"{REVISIONS}/modeldeck-iris-production/{i}",
                    "healthCheckPath": path,
                    "primaryContainer": {
                        "image": "inference:abc",
                        "containerPort": 8080,
                        "environment": [{"name": "MODEL_SSM_PARAMETER", "value": parameter}],
                    },
                }
                for i, path in enumerate(paths)
            ],
        }
    }


# One session: it caches the parsed service models, the slow part of a client.
_SESSION = boto3.session.Session(
    region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
)


class Account:
    """Stubbed clients answering as a healthy deployed account; tests change one answer."""

    def __init__(self) -> None:
        self.clients = {
            name: _SESSION.client(name)  # type: ignore[call-overload]
            for name in ("cloudformation", "s3", "ssm", "apprunner", "ecs", "iam")
        }
        self.stubs = {name: Stubber(client) for name, client in self.clients.items()}
        self.answers: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        self.answers[name] = value

    def answer(
        self, service: str, operation: str, name: str, default: Any, params: dict[str, Any]
    ) -> None:
        value = self.answers.get(name, default)
        stub = self.stubs[service]
        if isinstance(value, tuple) and value[0] == "error":
            _, code, status = value
            stub.add_client_error(
                operation, service_error_code=code, http_status_code=status, expected_params=params
            )
        else:
            stub.add_response(operation, value, params)

    def queue(self, *, environments: int = 2) -> None:
        self.answer(
            "cloudformation",
            "describe_stacks",
            "base",
            {"Stacks": [stack("modeldeck", BASE_OUTPUTS)]},
            {"StackName": "modeldeck"},
        )
        if isinstance(self.answers.get("base"), tuple):
            return
        self.answer(
            "s3", "get_bucket_versioning", "versioning", {"Status": "Enabled"}, {"Bucket": BUCKET}
        )
        self.answer(
            "s3",
            "get_bucket_encryption",
            "encryption",
            {
                "ServerSideEncryptionConfiguration": {
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                }
            },
            {"Bucket": BUCKET},
        )
        self.answer(
            "s3",
            "get_public_access_block",
            "public",
            {
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                }
            },
            {"Bucket": BUCKET},
        )
        self.answer(
            "s3",
            "get_bucket_cors",
            "cors",
            {
                "CORSRules": [
                    {
                        "AllowedMethods": ["PUT", "GET", "HEAD"],
                        "AllowedOrigins": ["https://deck.example.com"],
                        "ExposeHeaders": ["ETag"],
                    }
                ]
            },
            {"Bucket": BUCKET},
        )
        stacks = [
            stack("modeldeck", BASE_OUTPUTS),
            stack("modeldeck-iris-staging", STAGING),
            stack("modeldeck-iris-production", PRODUCTION),
            stack("unrelated", {"Foo": "bar"}),
        ]
        self.answer(
            "cloudformation",
            "describe_stacks",
            "all",
            {"Stacks": stacks[: environments + 1] + stacks[3:]},
            {},
        )
        envs = [("staging", STAGING), ("production", PRODUCTION)][:environments]
        for name, outputs in envs:
            default = {
                "Parameter": {
                    "Name": outputs["PointerParameter"],
                    "Type": "String",
                    "Value": pointer(),
                    "Version": 7,
                }
            }
            self.answer(
                "ssm",
                "get_parameter",
                f"{name}-pointer",
                default,
                {"Name": outputs["PointerParameter"]},
            )
            # The object is looked at only behind a pointer that parses and names the bucket.
            value = self.answers.get(f"{name}-pointer", default)
            parsed = _parse(value["Parameter"]["Value"]) if isinstance(value, dict) else None
            if parsed and parsed.get("bucket") == BUCKET and "s3_version_id" in parsed:
                self.answer(
                    "s3",
                    "head_object",
                    f"{name}-object",
                    {"ContentLength": 2048, "VersionId": "v3"},
                    {"Bucket": BUCKET, "Key": parsed["key"], "VersionId": parsed["s3_version_id"]},
                )
            if name == "staging":
                self.answer(
                    "apprunner",
                    "describe_service",
                    "staging-service",
                    apprunner_service(),
                    {"ServiceArn": APPRUNNER_ARN},
                )
            else:
                self.answer(
                    "ecs",
                    "describe_express_gateway_service",
                    "production-service",
                    ecs_service(),
                    {"serviceArn": ECS_ARN},
                )
        for sid, actions, resource in SIMULATIONS:
            params: dict[str, Any] = {"PolicySourceArn": ROLE, "ActionNames": actions}
            if resource != "*":
                params["ResourceArns"] = [resource]
            decisions = self.answers.get(f"simulate-{sid}", {})
            if isinstance(decisions, tuple):
                self.answer("iam", "simulate_principal_policy", f"simulate-{sid}", None, params)
                continue
            results = [
                {
                    "EvalActionName": a,
                    "EvalResourceName": resource,
                    "EvalDecision": decisions.get(a, "allowed"),
                }
                for a in actions
            ]
            self.stubs["iam"].add_response(
                "simulate_principal_policy",
                {"EvaluationResults": results, "IsTruncated": False},
                params,
            )

    def run(self) -> dict[str, Any]:
        self.queue(environments=self.answers.get("environments", 2))
        for stub in self.stubs.values():
            stub.activate()
        rows = run(
            Smoke(self.clients, region="us-east-1"), stack="modeldeck", environment_stacks=[]
        )
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()
        return {r.check: r for r in rows}


def _parse(value: str) -> dict[str, Any] | None:
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


SMOKE = "modeldeck-smoke"
SIMULATIONS = [
    ("ListModels", ["s3:ListBucket", "s3:ListBucketMultipartUploads"], f"arn:aws:s3:::{BUCKET}"),
    (
        "ReadWriteModels",
        [
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:ListMultipartUploadParts",
            "s3:AbortMultipartUpload",
        ],
        f"arn:aws:s3:::{BUCKET}/models/{SMOKE}",
    ),
    (
        "Pointers",
        ["ssm:GetParameter", "ssm:PutParameter", "ssm:GetParameterHistory"],
        f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/models/{SMOKE}",
    ),
    (
        "AppRunnerServices",
        [
            "apprunner:DescribeService",
            "apprunner:ListOperations",
            "apprunner:UpdateService",
        ],
        f"arn:aws:apprunner:us-east-1:{ACCOUNT}:service/modeldeck-{SMOKE}",
    ),
    (
        "EcsServices",
        [
            "ecs:DescribeExpressGatewayService",
            "ecs:UpdateExpressGatewayService",
            "ecs:DescribeServices",
            "ecs:UpdateService",
            "ecs:ListServiceDeployments",
        ],
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/modeldeck/modeldeck-{SMOKE}",
    ),
    (
        "EcsServiceDeployments",
        ["ecs:DescribeServiceDeployments", "ecs:StopServiceDeployment"],
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:service-deployment/modeldeck/modeldeck-{SMOKE}",
    ),
    (
        "EcsServiceRevisions",
        ["ecs:DescribeServiceRevisions"],
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:service-revision/modeldeck/modeldeck-{SMOKE}",
    ),
    ("EcsTaskDefinitions", ["ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"], "*"),
    (
        "PassInferenceRoles",
        ["iam:PassRole"],
        f"arn:aws:iam::{ACCOUNT}:role/modeldeck/inference/{SMOKE}",
    ),
    ("AppRunnerList", ["apprunner:ListServices"], "*"),
    (
        "Alarms",
        [
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:TagResource",
            "cloudwatch:DeleteAlarms",
            "cloudwatch:SetAlarmState",
        ],
        f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:modeldeck-{SMOKE}",
    ),
    (
        "MetricsRead",
        [
            "cloudwatch:GetMetricData",
            "cloudwatch:DescribeAlarms",
            "elasticloadbalancing:DescribeTargetGroups",
        ],
        "*",
    ),
    (
        "ServiceLogs",
        ["logs:FilterLogEvents", "logs:DescribeLogStreams"],
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/apprunner/modeldeck-{SMOKE}",
    ),
    (
        "ServiceLogs",
        ["logs:FilterLogEvents", "logs:DescribeLogStreams"],
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/ecs/modeldeck-{SMOKE}",
    ),
]


@pytest.fixture
def account() -> Iterator[Account]:
    yield Account()


def test_the_simulations_follow_the_template() -> None:
    # If this fails, the template's DashboardRole changed: update SIMULATIONS.
    from tools.cfn import load_template, resolve, sample_arn, statements
    from tools.dashboard_iam import BASE_TEMPLATE, dashboard_policy
    from tools.smoke_aws import context_from

    template = load_template(BASE_TEMPLATE)
    context = context_from(template, BASE_OUTPUTS, "us-east-1")
    found = [
        (s.sid, list(s.actions), sample_arn(r, SMOKE))
        for d in dashboard_policy(template)
        for s in statements(resolve(d, context))
        for r in s.resources
    ]
    assert found == SIMULATIONS


def test_a_healthy_account_passes_every_check(account: Account) -> None:
    rows = account.run()
    assert [r.check for r in rows.values() if r.result != OK] == []
    assert set(rows) == {
        "stack modeldeck",
        "bucket versioning",
        "bucket encryption",
        "bucket public access",
        "bucket CORS",
        "environment stacks",
        "modeldeck-iris-staging pointer",
        "modeldeck-iris-staging pointer object",
        "modeldeck-iris-staging service",
        "modeldeck-iris-production pointer",
        "modeldeck-iris-production pointer object",
        "modeldeck-iris-production service",
        *(f"dashboard role: {sid}" for sid, _, _ in SIMULATIONS),
    }
    assert rows["environment stacks"].detail == "modeldeck-iris-staging, modeldeck-iris-production"
    assert rows["bucket CORS"].detail == "PUT + ETag from https://deck.example.com"
    assert rows["modeldeck-iris-production service"].detail == "ACTIVE, /readyz"


FAILURES = [
    ("base", ("error", "ValidationError", 400), "stack modeldeck", "deploy infra/base.yaml first"),
    (
        "versioning",
        {"Status": "Suspended"},
        "bucket versioning",
        "Suspended; pointers pin object versions",
    ),
    ("versioning", {}, "bucket versioning", "never enabled"),
    ("versioning", ("error", "AccessDenied", 403), "bucket versioning", "AccessDenied"),
    (
        "encryption",
        ("error", "ServerSideEncryptionConfigurationNotFoundError", 404),
        "bucket encryption",
        "no default encryption",
    ),
    (
        "public",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": False,
                "RestrictPublicBuckets": True,
            }
        },
        "bucket public access",
        "not blocked: BlockPublicPolicy",
    ),
    ("cors", ("error", "NoSuchCORSConfiguration", 404), "bucket CORS", "browser uploads fail"),
    (
        "cors",
        {"CORSRules": [{"AllowedMethods": ["PUT"], "AllowedOrigins": ["*"]}]},
        "bucket CORS",
        "exposes ETag",
    ),
    (
        "cors",
        {
            "CORSRules": [
                {"AllowedMethods": ["GET"], "AllowedOrigins": ["*"], "ExposeHeaders": ["ETag"]}
            ]
        },
        "bucket CORS",
        "allows PUT",
    ),
    ("environments", 0, "environment stacks", "none found"),
    (
        "staging-pointer",
        ("error", "ParameterNotFound", 400),
        "modeldeck-iris-staging pointer",
        "ParameterNotFound",
    ),
    (
        "staging-pointer",
        {"Parameter": {"Value": "not json"}},
        "modeldeck-iris-staging pointer",
        "is not JSON",
    ),
    (
        "staging-pointer",
        {"Parameter": {"Value": pointer(sha256=None, s3_version_id=None)}},
        "modeldeck-iris-staging pointer",
        "lacks s3_version_id, sha256",
    ),
    (
        "staging-pointer",
        {"Parameter": {"Value": pointer(bucket="elsewhere")}},
        "modeldeck-iris-staging pointer",
        "names bucket elsewhere",
    ),
    (
        "staging-object",
        ("error", "404", 404),
        "modeldeck-iris-staging pointer object",
        "version v3 does not exist",
    ),
    (
        "staging-object",
        {"ContentLength": 99},
        "modeldeck-iris-staging pointer object",
        "99 bytes, the pointer says 2048",
    ),
    (
        "staging-service",
        ("error", "ResourceNotFoundException", 400),
        "modeldeck-iris-staging service",
        "ResourceNotFoundException",
    ),
    (
        "staging-service",
        apprunner_service(path="/healthz"),
        "modeldeck-iris-staging service",
        "health check on /healthz",
    ),
    (
        "staging-service",
        apprunner_service(status="OPERATION_IN_PROGRESS"),
        "modeldeck-iris-staging service",
        "status OPERATION_IN_PROGRESS",
    ),
    (
        "staging-service",
        apprunner_service(parameter="/models/iris/other"),
        "modeldeck-iris-staging service",
        "MODEL_SSM_PARAMETER is /models/iris/other",
    ),
    (
        "production-service",
        ecs_service(paths=("/readyz", "/")),
        "modeldeck-iris-production service",
        "health check on /readyz, /",
    ),
    (
        "production-service",
        ecs_service(status="DRAINING"),
        "modeldeck-iris-production service",
        "status DRAINING",
    ),
    (
        "production-service",
        ("error", "ServiceNotFoundException", 400),
        "modeldeck-iris-production service",
        "ServiceNotFoundException",
    ),
    (
        "simulate-Pointers",
        {"ssm:PutParameter": "implicitDeny"},
        "dashboard role: Pointers",
        "ssm:PutParameter (implicitDeny)",
    ),
    (
        "simulate-ListModels",
        ("error", "AccessDenied", 403),
        "dashboard role: ListModels",
        "needs iam:SimulatePrincipalPolicy",
    ),
]


@pytest.mark.parametrize(
    ("answer", "value", "check", "says"),
    FAILURES,
    ids=[f"{f[0]}-{i}" for i, f in enumerate(FAILURES)],
)
def test_each_failure_is_a_row_saying_what_to_fix(
    account: Account, answer: str, value: Any, check: str, says: str
) -> None:
    if answer == "environments":
        account.set("environments", value)
    else:
        account.set(answer, value)
    rows = account.run()
    assert rows[check].result == FAIL, rows[check]
    assert says in rows[check].detail
    failed = [name for name, row in rows.items() if row.result == FAIL]
    assert failed == [check], "one bad answer fails one row"


def test_the_table_and_the_exit_status(
    account: Account, capsys: pytest.CaptureFixture[str]
) -> None:
    account.set("versioning", {"Status": "Suspended"})
    rows = account.run()
    text = table(rows.values())
    assert "bucket versioning" in text and "FAIL" in text
    assert text.splitlines()[-1] == f"{len(rows) - 1} passed, 1 failed"


def test_main_needs_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
