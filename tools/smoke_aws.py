"""Smoke test of a deployed ModelDeck account, with the caller's AWS credentials.

    python -m tools.smoke_aws [--stack modeldeck] [--environment-stack NAME ...]
                              [--region R] [--profile P]          (make smoke-aws)

It only reads (Describe/Get/List calls and IAM's policy simulator) and prints
one row per check, with what to fix for each that fails:

- the models bucket (the base stack's): versioning on, default encryption,
  public access blocked, a CORS rule that allows PUT and exposes ETag;
- each environment (every stack made from infra/environment.yaml, or the ones
  named): its pointer parses and names an existing object version of the size
  it states; its service exists, runs, health-checks /readyz and reads that
  pointer (App Runner DescribeService, ECS DescribeExpressGatewayService);
- the dashboard's role may make every call in its policy (infra/base.yaml,
  which the test suite keeps equal to what the code calls), checked with
  iam:SimulatePrincipalPolicy on the deployed role.

Exit status 0 when every check holds, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tools.cfn import Context, default_context, load_template, resolve, sample_arn, statements
from tools.dashboard_iam import BASE_TEMPLATE, dashboard_policy

OK, FAIL = "ok", "FAIL"
HEALTH_PATH = "/readyz"
POINTER_FIELDS = ("schema", "model", "version", "bucket", "key", "s3_version_id", "sha256", "size")


@dataclass(frozen=True)
class Row:
    check: str
    result: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.result == FAIL


def _error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def _outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


@dataclass(frozen=True)
class Environment:
    stack: str
    pointer: str
    service_arn: str
    target: str


class Smoke:
    """The checks; ``clients`` maps a service name to a boto3 client (tests stub them)."""

    def __init__(self, clients: Mapping[str, Any], *, region: str) -> None:
        self.clients = clients
        self.region = region
        self.rows: list[Row] = []

    def row(self, check: str, ok: bool, detail: str) -> bool:
        self.rows.append(Row(check, OK if ok else FAIL, detail))
        return ok

    def guarded(self, check: str, fix: str, action: Callable[[], bool]) -> bool:
        """Run ``action``; an AWS error becomes a failed row saying what to fix."""
        try:
            return action()
        except (ClientError, BotoCoreError) as exc:
            return self.row(check, False, f"{_error(exc)}; {fix}")

    # --- stacks ------------------------------------------------------------------

    def base_stack(self, name: str) -> dict[str, str] | None:
        found: dict[str, str] = {}

        def read() -> bool:
            stack = self.clients["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
            found.update(_outputs(stack))
            missing = {"BucketName", "DashboardRoleArn"} - set(found)
            return self.row(
                f"stack {name}",
                not missing,
                f"{stack['StackStatus']}"
                + (f"; outputs missing: {', '.join(sorted(missing))}" if missing else ""),
            )

        fix = "deploy infra/base.yaml first (docs/deploy-aws.md, step 2)"
        return found if self.guarded(f"stack {name}", fix, read) else None

    def environments(self, names: Iterable[str]) -> list[Environment]:
        wanted = list(names)
        found: list[Environment] = []

        def read() -> bool:
            stacks: list[dict[str, Any]] = []
            cfn = self.clients["cloudformation"]
            if wanted:
                for name in wanted:
                    stacks.extend(cfn.describe_stacks(StackName=name)["Stacks"])
            else:
                for page in cfn.get_paginator("describe_stacks").paginate():
                    stacks.extend(page["Stacks"])
            for stack in stacks:
                outputs = _outputs(stack)
                if {"PointerParameter", "ServiceArn", "Target"} <= set(outputs):
                    found.append(
                        Environment(
                            stack["StackName"],
                            outputs["PointerParameter"],
                            outputs["ServiceArn"],
                            outputs["Target"],
                        )
                    )
            return self.row(
                "environment stacks",
                bool(found),
                ", ".join(e.stack for e in found)
                or "none found; deploy infra/environment.yaml (docs/deploy-aws.md, step 6)",
            )

        self.guarded("environment stacks", "check the stack names and the region", read)
        return found

    # --- the bucket --------------------------------------------------------------------

    def bucket(self, bucket: str) -> None:
        s3 = self.clients["s3"]

        def versioning() -> bool:
            status = s3.get_bucket_versioning(Bucket=bucket).get("Status", "never enabled")
            return self.row(
                "bucket versioning",
                status == "Enabled",
                f"{bucket}: {status}"
                + ("" if status == "Enabled" else "; pointers pin object versions: enable it"),
            )

        def encryption() -> bool:
            try:
                rules = s3.get_bucket_encryption(Bucket=bucket)[
                    "ServerSideEncryptionConfiguration"
                ]["Rules"]
            except ClientError as exc:
                if (
                    exc.response["Error"]["Code"]
                    != "ServerSideEncryptionConfigurationNotFoundError"
                ):
                    raise
                rules = []
            algorithms = [
                r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
            ]
            return self.row(
                "bucket encryption",
                any(algorithms),
                ", ".join(a for a in algorithms if a) or "no default encryption: set SSE-S3 or KMS",
            )

        def public_access() -> bool:
            config = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            off = [
                k
                for k in (
                    "BlockPublicAcls",
                    "IgnorePublicAcls",
                    "BlockPublicPolicy",
                    "RestrictPublicBuckets",
                )
                if not config.get(k)
            ]
            return self.row(
                "bucket public access",
                not off,
                "all blocked" if not off else f"not blocked: {', '.join(off)}; turn them on",
            )

        def cors() -> bool:
            try:
                rules = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NoSuchCORSConfiguration":
                    raise
                rules = []
            good = [
                r
                for r in rules
                if "PUT" in r.get("AllowedMethods", [])
                and "etag" in {h.lower() for h in r.get("ExposeHeaders", [])}
            ]
            if good:
                origins = sorted({o for r in good for o in r.get("AllowedOrigins", [])})
                return self.row("bucket CORS", True, "PUT + ETag from " + ", ".join(origins))
            return self.row(
                "bucket CORS",
                False,
                "no rule allows PUT and exposes ETag: browser uploads fail; set the base "
                "stack's DashboardOrigins to the dashboard's origin",
            )

        fix = "the caller may lack s3:GetBucket* on the bucket"
        self.guarded("bucket versioning", fix, versioning)
        self.guarded("bucket encryption", fix, encryption)
        self.guarded("bucket public access", fix, public_access)
        self.guarded("bucket CORS", fix, cors)

    # --- environments --------------------------------------------------------------------

    def pointer(self, env: Environment, bucket: str) -> None:
        check = f"{env.stack} pointer"
        pointer: dict[str, Any] = {}

        def read() -> bool:
            value = self.clients["ssm"].get_parameter(Name=env.pointer)["Parameter"]["Value"]
            try:
                data = json.loads(value)
            except ValueError:
                return self.row(check, False, f"{env.pointer} is not JSON; promote a version again")
            missing = [f for f in POINTER_FIELDS if not isinstance(data, dict) or f not in data]
            if missing:
                return self.row(
                    check,
                    False,
                    f"{env.pointer} lacks {', '.join(missing)}; promote a version again",
                )
            if data["bucket"] != bucket:
                return self.row(
                    check, False, f"{env.pointer} names bucket {data['bucket']}, not {bucket}"
                )
            pointer.update(data)
            return self.row(check, True, f"{env.pointer}: {data['model']} {data['version']}")

        if not self.guarded(check, f"does {env.pointer} exist?", read):
            return
        check = f"{env.stack} pointer object"

        def head() -> bool:
            try:
                answer = self.clients["s3"].head_object(
                    Bucket=bucket, Key=pointer["key"], VersionId=pointer["s3_version_id"]
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in {
                    "404",
                    "NoSuchKey",
                    "NoSuchVersion",
                    "400",
                }:
                    raise
                return self.row(
                    check,
                    False,
                    f"s3://{bucket}/{pointer['key']} version {pointer['s3_version_id']} does "
                    "not exist: promote a version that does",
                )
            size = int(answer.get("ContentLength", -1))
            return self.row(
                check,
                size == int(pointer["size"]),
                f"{size} bytes"
                + ("" if size == int(pointer["size"]) else f", the pointer says {pointer['size']}"),
            )

        self.guarded(check, "the caller may lack s3:GetObjectVersion", head)

    def service(self, env: Environment) -> None:
        check = f"{env.stack} service"
        if env.target == "apprunner":
            action: Callable[[], bool] = partial(self._apprunner, env, check)
        elif env.target == "ecs-express":
            action = partial(self._ecs_express, env, check)
        else:
            self.row(check, False, f"unknown target {env.target!r}")
            return
        self.guarded(check, f"does {env.service_arn} exist?", action)

    def _service_row(
        self,
        check: str,
        *,
        status: str,
        running: str,
        paths: list[str],
        parameters: list[str],
        pointer: str,
    ) -> bool:
        problems = []
        if status != running:
            problems.append(f"status {status}")
        if not paths or any(p != HEALTH_PATH for p in paths):
            problems.append(
                f"health check on {', '.join(paths) or 'nothing'}: set it to {HEALTH_PATH} "
                "(a deployment must wait for the model)"
            )
        if not parameters or any(p.split(":", 1)[0] != pointer for p in parameters):
            problems.append(
                f"MODEL_SSM_PARAMETER is {', '.join(parameters) or 'unset'}, not {pointer}"
            )
        return self.row(check, not problems, "; ".join(problems) or f"{status}, {HEALTH_PATH}")

    def _apprunner(self, env: Environment, check: str) -> bool:
        service = self.clients["apprunner"].describe_service(ServiceArn=env.service_arn)["Service"]
        image = service.get("SourceConfiguration", {}).get("ImageRepository", {})
        variables = image.get("ImageConfiguration", {}).get("RuntimeEnvironmentVariables", {})
        health = service.get("HealthCheckConfiguration", {})
        path = health.get("Path", "/") if health.get("Protocol") == "HTTP" else "TCP"
        parameter = variables.get("MODEL_SSM_PARAMETER")
        return self._service_row(
            check,
            status=service["Status"],
            running="RUNNING",
            paths=[path],
            parameters=[parameter] if parameter else [],
            pointer=env.pointer,
        )

    def _ecs_express(self, env: Environment, check: str) -> bool:
        service = self.clients["ecs"].describe_express_gateway_service(serviceArn=env.service_arn)[
            "service"
        ]
        configurations = service.get("activeConfigurations", [])
        parameters = [
            item["value"]
            for c in configurations
            for item in c.get("primaryContainer", {}).get("environment", [])
            if item.get("name") == "MODEL_SSM_PARAMETER"
        ]
        return self._service_row(
            check,
            status=service.get("status", {}).get("statusCode", "UNKNOWN"),
            running="ACTIVE",
            paths=[c.get("healthCheckPath", "") for c in configurations],
            parameters=parameters,
            pointer=env.pointer,
        )

    # --- the dashboard's role -----------------------------------------------------------

    def dashboard_role(self, role_arn: str, context: Context) -> None:
        """Simulate each statement of the template's policy on the deployed role."""
        template = load_template(BASE_TEMPLATE)
        for document in dashboard_policy(template):
            for statement in statements(resolve(document, context)):
                if statement.effect != "Allow":
                    continue
                for resource in statement.resources:
                    check = f"dashboard role: {statement.sid}"
                    sample = sample_arn(resource, "modeldeck-smoke")
                    self.guarded(
                        check,
                        "the caller needs iam:SimulatePrincipalPolicy",
                        partial(self._simulate, role_arn, check, statement.actions, sample),
                    )

    def _simulate(self, role_arn: str, check: str, actions: tuple[str, ...], sample: str) -> bool:
        kwargs: dict[str, Any] = {"PolicySourceArn": role_arn, "ActionNames": list(actions)}
        if sample != "*":
            kwargs["ResourceArns"] = [sample]
        denied = []
        paginator = self.clients["iam"].get_paginator("simulate_principal_policy")
        for page in paginator.paginate(**kwargs):
            for result in page["EvaluationResults"]:
                if result["EvalDecision"] != "allowed":
                    denied.append(f"{result['EvalActionName']} ({result['EvalDecision']})")
        if denied:
            detail = (
                f"denied on {sample}: {', '.join(denied)}; redeploy infra/base.yaml and "
                "look for a permissions boundary or an SCP"
            )
        else:
            detail = f"{len(actions)} actions on {sample}"
        return self.row(check, not denied, detail)


def context_from(template: Mapping[str, Any], outputs: Mapping[str, str], region: str) -> Context:
    """Fill the base template's names in from the deployed stack's outputs."""
    role = outputs["DashboardRoleArn"].split(":")
    values = {
        "AWS::Partition": role[1],
        "AWS::AccountId": role[4],
        "AWS::Region": region,
        "ModelsBucket": outputs["BucketName"],
    }
    for name in ("PointerPrefix", "ServicePrefix", "ClusterName"):
        if name in outputs:
            values[name] = outputs[name]
    return default_context(template, **values)


def run(smoke: Smoke, *, stack: str, environment_stacks: Iterable[str]) -> list[Row]:
    outputs = smoke.base_stack(stack)
    if outputs is None:
        return smoke.rows
    bucket = outputs["BucketName"]
    smoke.bucket(bucket)
    for env in smoke.environments(environment_stacks):
        smoke.pointer(env, bucket)
        smoke.service(env)
    template = load_template(BASE_TEMPLATE)
    smoke.dashboard_role(outputs["DashboardRoleArn"], context_from(template, outputs, smoke.region))
    return smoke.rows


def table(rows: Iterable[Row]) -> str:
    rows = list(rows)
    width = max([len(r.check) for r in rows] + [5])
    lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.check.ljust(width)}  {r.result.ljust(6)}  {r.detail}" for r in rows]
    failed = sum(r.failed for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.smoke_aws", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--stack", default="modeldeck", help="the base stack (infra/base.yaml)")
    parser.add_argument(
        "--environment-stack",
        action="append",
        default=[],
        help="an environment stack (infra/environment.yaml); default: every one found",
    )
    parser.add_argument("--region")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)
    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    region = session.region_name
    if not region:
        parser.error("no region: pass --region or set AWS_REGION")
    config = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=30)
    clients = {
        name: session.client(name, config=config)  # type: ignore[call-overload]
        for name in ("cloudformation", "s3", "ssm", "apprunner", "ecs", "iam")
    }
    rows = run(
        Smoke(clients, region=region), stack=args.stack, environment_stacks=args.environment_stack
    )
    print(table(rows))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
