"""Elastic Load Balancing (v2): which Application Load Balancer a target group
belongs to.

The monitoring pages chart an ECS service's requests from the
``AWS/ApplicationELB`` metrics of its target group, whose dimensions are the
ARN suffixes of the target group *and* of its load balancer; ECS names only
the target group (``loadBalancers[].targetGroupArn``), so the load balancer
comes from DescribeTargetGroups. Reads only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboard.aws.clients import client
from dashboard.aws.errors import AwsNotFoundError, translate

# DescribeTargetGroups takes at most 20 target group ARNs per call.
MAX_TARGET_GROUPS_PER_CALL = 20


def _elbv2() -> Any:
    return client("elbv2")


@dataclass(frozen=True)
class TargetGroupInfo:
    arn: str
    name: str
    load_balancer_arns: tuple[str, ...]  # empty when no listener rule forwards to it
    target_type: str  # ip (Fargate, Express), instance, lambda, alb


def describe_target_groups(*, target_group_arns: list[str]) -> list[TargetGroupInfo]:
    """The named target groups (at most 20; one call). A target group that no
    longer exists reads as absent, not as an error. Raises AwsError."""
    arns = list(dict.fromkeys(a for a in target_group_arns if a))[:MAX_TARGET_GROUPS_PER_CALL]
    if not arns:
        return []
    try:
        response = _elbv2().describe_target_groups(TargetGroupArns=arns)
    except Exception as exc:
        error = translate(exc, operation="DescribeTargetGroups")
        if isinstance(error, AwsNotFoundError):
            return []
        raise error from exc
    return [
        TargetGroupInfo(
            arn=str(raw.get("TargetGroupArn", "")),
            name=str(raw.get("TargetGroupName", "")),
            load_balancer_arns=tuple(str(a) for a in raw.get("LoadBalancerArns") or []),
            target_type=str(raw.get("TargetType", "")),
        )
        for raw in response.get("TargetGroups") or []
    ]
