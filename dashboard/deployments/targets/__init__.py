"""Deploy targets: what runs an environment's inference service.

The deployment state machine talks to a target through the small interface in
``base.py`` and nothing else, so it does not know whether an environment runs
on App Runner or on ECS. ``target_for(environment)`` picks the implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboard.deployments.targets.base import (
    DeployTarget,
    OperationState,
    Phase,
    Revision,
    TargetBusy,
    TargetError,
)

if TYPE_CHECKING:
    from dashboard.deployments.models import Environment

__all__ = [
    "DeployTarget",
    "OperationState",
    "Phase",
    "Revision",
    "TargetBusy",
    "TargetError",
    "target_for",
]


def target_for(environment: Environment) -> DeployTarget:
    """The deploy target of ``environment`` (raises TargetError for an unknown kind)."""
    from dashboard.deployments.models import Environment as Env

    if environment.target == Env.Target.APPRUNNER:
        from dashboard.deployments.targets.apprunner import AppRunnerTarget

        return AppRunnerTarget(service_arn=environment.service_arn)
    if environment.target == Env.Target.ECS_EXPRESS:
        from dashboard.deployments.targets.ecs import EcsExpressTarget

        return EcsExpressTarget(service_arn=environment.service_arn)
    if environment.target == Env.Target.ECS:
        from dashboard.deployments.targets.ecs import EcsServiceTarget

        return EcsServiceTarget(service_arn=environment.service_arn)
    raise TargetError(
        f"{environment} uses the deploy target {environment.target!r}, which this "
        "version of the dashboard cannot drive"
    )
