"""The IAM permissions each AWS operation of the dashboard needs, and on what.

The dashboard's role (``DashboardRole`` in ``infra/base.yaml``) must allow
exactly what the code calls: ``tests/infra/test_dashboard_iam.py`` scans
``dashboard/`` for boto3 calls, looks each one up here and checks the template
both ways (every call allowed on the resources it touches; nothing allowed
that no call needs), and the suite records every call really made at run time
(``MODELDECK_AWS_CALL_LOG``, see :mod:`dashboard.aws.clients`) and checks
those too.

Adding an AWS call: add its operation here if it is new (the test names it and
prints the policy statement to paste into ``infra/base.yaml``).

Resources are written as CloudFormation ``!Sub`` strings over the base
template's parameters and resources, so that the test compares them with the
template's policy literally and ``tools/smoke_aws.py`` can fill them in from a
deployed stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# --- resources, by kind ------------------------------------------------------------

_ACCOUNT = "${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}"


def _arn(service: str, rest: str) -> str:
    return "arn:" + _ACCOUNT.replace("{service}", service) + ":" + rest


RESOURCES: dict[str, str] = {
    "bucket": "arn:${AWS::Partition}:s3:::${ModelsBucket}",
    # CONTRACT.md section 1: every model file lives under models/.
    "object": "arn:${AWS::Partition}:s3:::${ModelsBucket}/models/*",
    "pointer": _arn("ssm", "parameter${PointerPrefix}/*"),
    "apprunner-service": _arn("apprunner", "service/${ServicePrefix}*"),
    "ecs-service": _arn("ecs", "service/${ClusterName}/${ServicePrefix}*"),
    "ecs-service-deployment": _arn("ecs", "service-deployment/${ClusterName}/${ServicePrefix}*"),
    "ecs-service-revision": _arn("ecs", "service-revision/${ClusterName}/${ServicePrefix}*"),
    # The task and execution roles of the inference services (infra/environment.yaml).
    "inference-role": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/modeldeck/inference/*",
    "alarm": _arn("cloudwatch", "alarm:${ServicePrefix}*"),
    "apprunner-logs": _arn("logs", "log-group:/aws/apprunner/${ServicePrefix}*"),
    "ecs-logs": _arn("logs", "log-group:/ecs/${ServicePrefix}*"),
    # Actions IAM does not scope to a resource.
    "*": "*",
}


def _object_from_params(params: Mapping[str, Any]) -> str | None:
    bucket, key = params.get("Bucket"), params.get("Key")
    if isinstance(bucket, str) and isinstance(key, str):
        return f"arn:${{AWS::Partition}}:s3:::{bucket}/{key}"
    return None


def _bucket_from_params(params: Mapping[str, Any]) -> str | None:
    bucket = params.get("Bucket")
    return f"arn:${{AWS::Partition}}:s3:::{bucket}" if isinstance(bucket, str) else None


def _pointer_from_params(params: Mapping[str, Any]) -> str | None:
    name = params.get("Name")
    if not isinstance(name, str):
        return None
    name = name.split(":", 1)[0]  # a version selector (/models/iris/prod:7) is not part of the ARN
    return _arn("ssm", "parameter" + (name if name.startswith("/") else "/" + name))


# How to name the exact resource a recorded call touched, from its parameters
# (kinds without an entry are checked by action only at run time).
FROM_PARAMS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "bucket": _bucket_from_params,
    "object": _object_from_params,
    "pointer": _pointer_from_params,
}

# --- needs, by operation -----------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One IAM action on one kind of resource.

    ``when``: the need applies only when the call passes this parameter (S3
    asks for ``s3:GetObjectVersion`` only when a ``VersionId`` is given).
    """

    action: str
    resource: str
    when: str | None = None


def _s3_read(*, versions: bool = True) -> tuple[Need, ...]:
    needs = (Need("s3:GetObject", "object"),)
    return needs + ((Need("s3:GetObjectVersion", "object", when="VersionId"),) if versions else ())


# Keys are "<botocore service name>:<operation name>" as in botocore's models.
OPERATIONS: dict[str, tuple[Need, ...]] = {
    # S3: the registry, uploads (presigned part URLs act with the presigner's
    # rights), validation downloads.
    "s3:ListObjectsV2": (Need("s3:ListBucket", "bucket"),),
    "s3:ListObjectVersions": (Need("s3:ListBucketVersions", "bucket"),),
    "s3:ListMultipartUploads": (Need("s3:ListBucketMultipartUploads", "bucket"),),
    "s3:HeadObject": _s3_read(),
    "s3:GetObject": _s3_read(),
    "s3:PutObject": (Need("s3:PutObject", "object"),),
    "s3:DeleteObject": (
        Need("s3:DeleteObject", "object"),
        Need("s3:DeleteObjectVersion", "object", when="VersionId"),
    ),
    "s3:CreateMultipartUpload": (Need("s3:PutObject", "object"),),
    "s3:UploadPart": (Need("s3:PutObject", "object"),),
    "s3:CompleteMultipartUpload": (Need("s3:PutObject", "object"),),
    "s3:ListParts": (Need("s3:ListMultipartUploadParts", "object"),),
    "s3:AbortMultipartUpload": (Need("s3:AbortMultipartUpload", "object"),),
    # SSM: the pointers.
    "ssm:GetParameter": (Need("ssm:GetParameter", "pointer"),),
    "ssm:PutParameter": (Need("ssm:PutParameter", "pointer"),),
    "ssm:GetParameterHistory": (Need("ssm:GetParameterHistory", "pointer"),),
    # App Runner target.
    "apprunner:DescribeService": (Need("apprunner:DescribeService", "apprunner-service"),),
    "apprunner:ListOperations": (Need("apprunner:ListOperations", "apprunner-service"),),
    "apprunner:StartDeployment": (Need("apprunner:StartDeployment", "apprunner-service"),),
    # Passing the service's roles again (SourceConfiguration's access role,
    # InstanceConfiguration's instance role) is passing them: iam:PassRole.
    "apprunner:UpdateService": (
        Need("apprunner:UpdateService", "apprunner-service"),
        Need("iam:PassRole", "inference-role", when="SourceConfiguration"),
        Need("iam:PassRole", "inference-role", when="InstanceConfiguration"),
    ),
    "apprunner:ListServices": (Need("apprunner:ListServices", "*"),),
    # ECS target (Express Mode and classic services).
    "ecs:DescribeExpressGatewayService": (
        Need("ecs:DescribeExpressGatewayService", "ecs-service"),
    ),
    # ECS registers the new revision's task definition with the service's roles
    # on the caller's behalf.
    "ecs:UpdateExpressGatewayService": (
        Need("ecs:UpdateExpressGatewayService", "ecs-service"),
        Need("iam:PassRole", "inference-role"),
    ),
    "ecs:DescribeServices": (Need("ecs:DescribeServices", "ecs-service"),),
    "ecs:UpdateService": (Need("ecs:UpdateService", "ecs-service"),),
    "ecs:DescribeTaskDefinition": (Need("ecs:DescribeTaskDefinition", "*"),),
    "ecs:RegisterTaskDefinition": (
        Need("ecs:RegisterTaskDefinition", "*"),
        Need("iam:PassRole", "inference-role"),
    ),
    "ecs:ListServiceDeployments": (Need("ecs:ListServiceDeployments", "ecs-service"),),
    "ecs:DescribeServiceDeployments": (
        Need("ecs:DescribeServiceDeployments", "ecs-service-deployment"),
    ),
    "ecs:DescribeServiceRevisions": (Need("ecs:DescribeServiceRevisions", "ecs-service-revision"),),
    "ecs:StopServiceDeployment": (Need("ecs:StopServiceDeployment", "ecs-service-deployment"),),
    # CloudWatch: the metrics page, alarms that roll deployments back.
    "cloudwatch:GetMetricData": (Need("cloudwatch:GetMetricData", "*"),),
    "cloudwatch:PutMetricAlarm": (
        Need("cloudwatch:PutMetricAlarm", "alarm"),
        # PutMetricAlarm with Tags also needs TagResource on the alarm.
        Need("cloudwatch:TagResource", "alarm"),
    ),
    "cloudwatch:DescribeAlarms": (Need("cloudwatch:DescribeAlarms", "*"),),
    "cloudwatch:DeleteAlarms": (Need("cloudwatch:DeleteAlarms", "alarm"),),
    # The monitoring page's "test alarm" button, AWS's way to test an alarm's action.
    "cloudwatch:SetAlarmState": (Need("cloudwatch:SetAlarmState", "alarm"),),
    # Elastic Load Balancing: an ECS service's target group -> its load balancer,
    # for the AWS/ApplicationELB metrics (no resource-level permission in IAM).
    "elbv2:DescribeTargetGroups": (Need("elasticloadbalancing:DescribeTargetGroups", "*"),),
    # CloudWatch Logs: the logs page, of either kind of service.
    "logs:FilterLogEvents": (
        Need("logs:FilterLogEvents", "apprunner-logs"),
        Need("logs:FilterLogEvents", "ecs-logs"),
    ),
    "logs:GetLogEvents": (
        Need("logs:GetLogEvents", "apprunner-logs"),
        Need("logs:GetLogEvents", "ecs-logs"),
    ),
    "logs:DescribeLogStreams": (
        Need("logs:DescribeLogStreams", "apprunner-logs"),
        Need("logs:DescribeLogStreams", "ecs-logs"),
    ),
}


def needs_for(service: str, operation: str) -> tuple[Need, ...] | None:
    """The needs of one operation, or None when this table does not know it."""
    return OPERATIONS.get(f"{service}:{operation}")
