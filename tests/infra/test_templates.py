"""What infra/*.yaml promise, checked on the templates themselves (cfn-lint in
`make lint` checks them against CloudFormation's resource schemas): the bucket
of the contract, exact inference roles, secrets readable only by their own
role and never in plain environment variables, /readyz health checks, alarms
and log retention, and names inside the dashboard role's scope."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest

from dashboard.aws.permissions import RESOURCES
from tools.cfn import INFRA, Context, default_context, load_template, resolve, statements

ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
BUCKET_ARN = "arn:aws:s3:::modeldeck-models"
IMPORTS = {
    "modeldeck-BucketName": "modeldeck-models",
    "modeldeck-BucketArn": BUCKET_ARN,
    "modeldeck-PointerPrefix": "/models",
    "modeldeck-ServicePrefix": "modeldeck-",
    "modeldeck-ClusterName": "modeldeck",
    "modeldeck-InferenceRepositoryUri": f"{REGISTRY}/modeldeck/inference",
    "modeldeck-DashboardRepositoryUri": f"{REGISTRY}/modeldeck/dashboard",
    "modeldeck-DashboardRoleArn": f"arn:aws:iam::{ACCOUNT}:role/modeldeck/DashboardRole",
}
SECRET_NAMES = {"SECRET_KEY", "DATABASE_URL", "INFERENCE_API_KEYS", "DJANGO_SUPERUSER_PASSWORD"}


class _Names(Context):
    """Every resource resolves to a recognisable stand-in: ``Ref X`` -> ``ref:X``,
    ``X.Attr`` -> ``X.Attr``, except the names these tests look at."""

    def lookup(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        return name if "." in name else f"ref:{name}"


def rendered(name: str, **conditions: bool) -> dict[str, dict[str, Any]]:
    """The template's resources present under ``conditions``, names resolved."""
    template = load_template(INFRA / name)
    values = dict(
        default_context(
            template,
            ModelName="iris",
            EnvironmentName="staging",
            ImageTag="abc123",
            InitialPointer="{}",
            VpcId="vpc-1",
        ).values
    )
    values.update(
        {
            "PointerParameter": "/models/iris/staging",
            "ModelsBucket": "modeldeck-models",
            "Subnets": "subnet-1",
            "AppRunnerService.ServiceArn": (
                f"arn:aws:apprunner:us-east-1:{ACCOUNT}:service/modeldeck-iris-staging/0a1b"
            ),
            "EcsService.ServiceArn": (
                f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/modeldeck/modeldeck-iris-staging"
            ),
        }
    )
    context = _Names(values, IMPORTS, conditions)
    resources = {}
    for logical, resource in template["Resources"].items():
        if conditions.get(resource.get("Condition", ""), True):
            resources[logical] = resolve(resource, context)
    return resources


APPRUNNER = {
    "IsAppRunner": True,
    "IsEcsExpress": False,
    "HasSubnets": False,
    "HasAlarmTopic": False,
}
ECS = {"IsAppRunner": False, "IsEcsExpress": True, "HasSubnets": False, "HasAlarmTopic": False}
TARGETS = {"apprunner": APPRUNNER, "ecs-express": ECS}


def role_grants(resources: dict[str, dict[str, Any]]) -> dict[str, set[tuple[str, str]]]:
    grants: dict[str, set[tuple[str, str]]] = {}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        found = grants.setdefault(logical, set())
        for policy in resource["Properties"].get("Policies", []):
            for statement in statements(policy["PolicyDocument"]):
                assert statement.effect == "Allow"
                found |= {(a, r) for a in statement.actions for r in statement.resources}
    return grants


@pytest.mark.parametrize("target", TARGETS)
def test_the_inference_role_may_read_its_pointer_and_the_models_only(target: str) -> None:
    grants = role_grants(rendered("environment.yaml", **TARGETS[target]))["InferenceRole"]
    expected = {
        ("ssm:GetParameter", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/models/iris/staging"),
        ("s3:GetObject", f"{BUCKET_ARN}/models/*"),
        ("s3:GetObjectVersion", f"{BUCKET_ARN}/models/*"),
    }
    if target == "apprunner":  # App Runner injects RuntimeEnvironmentSecrets with it
        expected.add(("secretsmanager:GetSecretValue", "ref:ApiKeysSecret"))
    assert grants == expected


def test_the_service_health_check_is_readyz_on_both_targets() -> None:
    apprunner = rendered("environment.yaml", **APPRUNNER)["AppRunnerService"]["Properties"]
    assert apprunner["HealthCheckConfiguration"]["Protocol"] == "HTTP"
    assert apprunner["HealthCheckConfiguration"]["Path"] == "/readyz"
    ecs = rendered("environment.yaml", **ECS)["EcsService"]["Properties"]
    assert ecs["HealthCheckPath"] == "/readyz"
    image = apprunner["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"]
    for variables in (image["RuntimeEnvironmentVariables"], ecs["PrimaryContainer"]["Environment"]):
        assert {"Name": "MODEL_SSM_PARAMETER", "Value": "/models/iris/staging"} in variables
    assert apprunner["SourceConfiguration"]["AutoDeploymentsEnabled"] is False


def test_the_service_runs_exposed_with_keys_required_on_both_targets() -> None:
    # docs/inference.md, "Running exposed": the public URL never serves an open
    # /predict, public metrics or API docs, and the inference service refuses to
    # start if the keys secret is missing.
    apprunner = rendered("environment.yaml", **APPRUNNER)["AppRunnerService"]["Properties"]
    ecs = rendered("environment.yaml", **ECS)["EcsService"]["Properties"]
    image = apprunner["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"]
    for variables, secrets in (
        (image["RuntimeEnvironmentVariables"], image["RuntimeEnvironmentSecrets"]),
        (ecs["PrimaryContainer"]["Environment"], ecs["PrimaryContainer"]["Secrets"]),
    ):
        settings = {v["Name"]: v["Value"] for v in variables}
        assert settings["REQUIRE_API_KEYS"] == "true"
        assert settings["METRICS_ACCESS"] == "keys" and settings["ERROR_DETAILS"] == "keys"
        assert settings["DOCS_ACCESS"] == "off"
        # what the dashboard's inference charts select on (INFERENCE_METRICS_ENVIRONMENT_DIMENSION)
        assert settings["EMF_DIMENSIONS"] == "Environment=staging"
        assert "INFERENCE_API_KEYS" in {s["Name"] for s in secrets}


def _secret_readers(resources: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    secrets = {k for k, r in resources.items() if r["Type"] == "AWS::SecretsManager::Secret"}
    readers: dict[str, set[str]] = {f"ref:{s}": set() for s in secrets}
    for role, grants in role_grants(resources).items():
        for action, resource in grants:
            if action.startswith("secretsmanager:") or action == "*":
                assert resource in readers, f"{role} may {action} on {resource}"
                readers[resource].add(role)
    return readers


@pytest.mark.parametrize(
    ("template", "conditions", "expected"),
    [
        ("environment.yaml", APPRUNNER, {"ref:ApiKeysSecret": {"InferenceRole"}}),
        ("environment.yaml", ECS, {"ref:ApiKeysSecret": {"ExecutionRole"}}),
        (
            "dashboard.yaml",
            {},
            {
                "ref:SecretKeySecret": {"ExecutionRole"},
                "ref:DatabaseUrlSecret": {"ExecutionRole"},
                "ref:AdminPasswordSecret": {"ExecutionRole"},
                "ref:ValidationSecretKeySecret": {"ValidationExecutionRole"},
                # The master password: CloudFormation reads it, no container does.
                "ref:DatabaseMasterSecret": set(),
            },
        ),
        ("base.yaml", {"HasBucketName": False}, {}),
    ],
)
def test_each_secret_is_readable_only_by_its_own_role(template, conditions, expected) -> None:
    assert _secret_readers(rendered(template, **conditions)) == expected


def _environment_lists(node: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    found: list[tuple[str, list[dict[str, Any]]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {
                "Environment",
                "RuntimeEnvironmentVariables",
                "Secrets",
                "RuntimeEnvironmentSecrets",
            } and isinstance(value, list):
                found.append((key, value))
            found.extend(_environment_lists(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_environment_lists(item))
    return found


@pytest.mark.parametrize(
    ("template", "conditions"),
    [("environment.yaml", APPRUNNER), ("environment.yaml", ECS), ("dashboard.yaml", {})],
)
def test_secrets_reach_containers_as_secrets_never_as_plain_variables(template, conditions) -> None:
    resources = rendered(template, **conditions)
    secrets = {
        f"ref:{k}" for k, r in resources.items() if r["Type"] == "AWS::SecretsManager::Secret"
    }
    injected = set()
    for key, items in _environment_lists(resources):
        for item in items:
            if key in {"Environment", "RuntimeEnvironmentVariables"}:
                assert item["Name"] not in SECRET_NAMES, f"{item['Name']} in plain {key}"
                assert not re.search(r"password|secret|token", item["Name"], re.I), item
            else:
                source = item.get("ValueFrom", item.get("Value"))
                assert source in secrets, item
                injected.add(item["Name"])
    expected = (
        {"INFERENCE_API_KEYS"}
        if template == "environment.yaml"
        else {"SECRET_KEY", "DATABASE_URL", "DJANGO_SUPERUSER_PASSWORD"}
    )
    assert injected == expected


def test_the_bucket_is_the_contracts() -> None:
    bucket = rendered("base.yaml", HasBucketName=False)["ModelsBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (cors,) = bucket["CorsConfiguration"]["CorsRules"]
    assert "PUT" in cors["AllowedMethods"] and cors["ExposedHeaders"] == ["ETag"]
    assert cors["AllowedOrigins"] == "https://deck.example.com"  # the DashboardOrigins parameter
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)
    expiry = next(
        r["NoncurrentVersionExpiration"] for r in rules if "NoncurrentVersionExpiration" in r
    )
    # Pinned versions must survive an overwrite: the newest ones are kept whatever their age.
    assert expiry["NewerNoncurrentVersions"] and expiry["NoncurrentDays"]
    assert all(r["Status"] == "Enabled" for r in rules)


def test_the_image_repositories_scan_on_push_and_refuse_overwrites() -> None:
    resources = rendered("base.yaml", HasBucketName=False)
    repositories = [r for r in resources.values() if r["Type"] == "AWS::ECR::Repository"]
    assert {r["Properties"]["RepositoryName"] for r in repositories} == {
        "modeldeck/inference",
        "modeldeck/dashboard",
    }
    for repository in repositories:
        assert repository["Properties"]["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert repository["Properties"]["ImageTagMutability"] == "IMMUTABLE"
        json.loads(repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])


@pytest.mark.parametrize("target", TARGETS)
def test_each_service_has_5xx_and_p99_alarms_and_kept_logs(target: str) -> None:
    resources = rendered("environment.yaml", **TARGETS[target])
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == 2
    rate = next(a for a in alarms if "Metrics" in a)
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in rate["Metrics"] if "MetricStat" in m}
    assert names in ({"5xxStatusResponses", "Requests"}, {"Http5xx", "Requests"})
    latency = next(a for a in alarms if "ExtendedStatistic" in a)
    assert latency["ExtendedStatistic"] == "p99"
    groups = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert groups and all(g["Properties"].get("RetentionInDays") for g in groups)
    if target == "apprunner":  # App Runner makes its own groups: the custom resource sets them
        retention = resources["AppRunnerLogRetention"]["Properties"]
        assert retention["RetentionInDays"] == "30"  # the LogRetentionDays parameter
        assert [g.rsplit("/", 1)[1] for g in retention["LogGroups"]] == ["application", "service"]


def _matches(kind: str, arn: str) -> bool:
    base = load_template(INFRA / "base.yaml")
    pattern = resolve({"Fn::Sub": RESOURCES[kind]}, default_context(base, ModelsBucket="b"))
    return fnmatch.fnmatchcase(arn, pattern)


def test_what_an_environment_creates_is_inside_the_dashboard_roles_scope() -> None:
    apprunner = rendered("environment.yaml", **APPRUNNER)
    ecs = rendered("environment.yaml", **ECS)
    name = apprunner["AppRunnerService"]["Properties"]["ServiceName"]
    assert name == ecs["EcsService"]["Properties"]["ServiceName"] == "modeldeck-iris-staging"
    region = f"us-east-1:{ACCOUNT}"
    assert _matches("apprunner-service", f"arn:aws:apprunner:{region}:service/{name}/0a1b")
    assert _matches("ecs-service", f"arn:aws:ecs:{region}:service/modeldeck/{name}")
    assert _matches(
        "ecs-service-deployment", f"arn:aws:ecs:{region}:service-deployment/modeldeck/{name}/x"
    )
    assert _matches("pointer", f"arn:aws:ssm:{region}:parameter/models/iris/staging")
    log_group = ecs["LogGroup"]["Properties"]["LogGroupName"]
    assert _matches("ecs-logs", f"arn:aws:logs:{region}:log-group:{log_group}")
    assert _matches(
        "apprunner-logs", f"arn:aws:logs:{region}:log-group:/aws/apprunner/{name}/0a1b/application"
    )
    for resources in (apprunner, ecs):
        for logical in ("InferenceRole", "ExecutionRole", "AccessRole"):
            if logical in resources:
                path = resources[logical]["Properties"]["Path"]
                assert _matches("inference-role", f"arn:aws:iam::{ACCOUNT}:role{path}{logical}-X")


def test_every_imported_name_is_exported_by_the_base_stack() -> None:
    base = load_template(INFRA / "base.yaml")
    exported = {
        output["Export"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", "${BaseStack}")
        for output in base["Outputs"].values()
        if "Export" in output
    }
    for name in ("environment.yaml", "dashboard.yaml"):
        text = json.dumps(load_template(INFRA / name))
        imported = set(re.findall(r'"Fn::ImportValue": \{"Fn::Sub": "([^"]+)"\}', text))
        assert imported and imported <= exported, name


def test_the_validation_worker_holds_nothing_worth_stealing() -> None:
    # docs/security.md, "Production layout".
    resources = rendered("dashboard.yaml")
    task = resources["ValidationTaskDefinition"]["Properties"]
    assert "TaskRoleArn" not in task  # no AWS credentials at all
    (container,) = task["ContainerDefinitions"]
    assert container["Command"][3:6] == ["worker", "--queues", "validation"]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["VALIDATION_SANDBOX"] == "container"
    assert "DATABASE_URL" not in environment and "MODELS_BUCKET" not in environment
    assert [s["Name"] for s in container["Secrets"]] == ["SECRET_KEY"]
    assert container["Secrets"][0]["ValueFrom"] == "ref:ValidationSecretKeySecret"
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"] == [{"SourceVolume": "scratch", "ContainerPath": "/tmp"}]
    assert container["LinuxParameters"]["Capabilities"]["Drop"] == ["ALL"]
    network = resources["Validation"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["Subnets"] == ["ref:ValidationSubnetA", "ref:ValidationSubnetB"]
    # Its subnets have no route out: nothing adds a route to their table.
    routes = [r for r in resources.values() if r["Type"] == "AWS::EC2::Route"]
    assert routes == []
    endpoints = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::VPCEndpoint"
    ]
    assert {e["ServiceName"].rsplit(".", 1)[-1] for e in endpoints} == {"s3", "api", "dkr", "logs"}
    # The other worker leaves the validation queue alone.
    worker = resources["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert worker["Command"][3:6] == ["worker", "--queues", "celery"]
