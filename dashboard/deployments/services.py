"""Writes about deployments: start one, run it to its end, resume stale ones.

A deployment is: write the environment's pointer to SSM (in the request, so a
refused write is reported at once and leaves no row behind), then a worker asks
App Runner to redeploy the service, which restarts the inference containers,
which read the new pointer. The worker follows App Runner's operation to its
end and checks what the service really serves.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.accounts.roles import ADMIN, DEPLOYER, user_has_role
from dashboard.aws import apprunner, ssm
from dashboard.aws.errors import AwsConflictError, AwsError, AwsNotFoundError
from dashboard.deployments.live import live_version
from dashboard.deployments.models import Deployment, DeploymentEvent, Environment
from dashboard.deployments.pointer import PointerError, pointer_build, pointer_dumps, pointer_loads
from dashboard.deployments.selectors import deployment_in_flight, environment_base_url
from dashboard.registry.names import validate_environment_name, validate_version_name
from dashboard.registry.selectors import version_get

logger = logging.getLogger(__name__)


class DeploymentError(Exception):
    """A deployment cannot start; ``status`` is the HTTP status that fits."""

    status = 400


class DeploymentConflict(DeploymentError):
    status = 409


class DeploymentForbidden(DeploymentError):
    status = 403


class DeploymentUpstreamError(DeploymentError):
    """AWS refused or failed a call needed to start the deployment."""

    status = 502


def _event(deployment: Deployment, message: str, *, level: str = "info") -> None:
    DeploymentEvent.objects.create(deployment=deployment, message=message, level=level)
    log = logger.warning if level in {"warning", "error"} else logger.info
    log("deployment %s: %s", deployment.pk, message)


def _check_permission(user: Any, environment: Environment) -> None:
    needed = ADMIN if environment.requires_admin else DEPLOYER
    if not user_has_role(user, needed):
        raise DeploymentForbidden(f"deploying to {environment} needs the {needed} role")


def deployment_start(
    *,
    environment: Environment,
    version: str,
    user: Any,
    reason: str = "",
    kind: str = Deployment.Kind.PROMOTE,
) -> Deployment:
    """Point ``environment`` at ``version`` and enqueue its rollout.

    Raises DeploymentError (with an HTTP status) when it cannot start; in that
    case nothing was written, neither the row nor the pointer.
    """
    _check_permission(user, environment)
    try:
        validate_version_name(version)
    except ValueError as exc:
        raise DeploymentError(str(exc)) from exc
    reason = reason.strip()
    if len(reason) > 500:
        raise DeploymentError("reason must be at most 500 characters")
    in_flight = deployment_in_flight(environment=environment)
    if in_flight is not None:
        raise DeploymentConflict(
            f"{environment} already has a deployment in flight (#{in_flight.pk}, "
            f"{in_flight.to_version}, {in_flight.status}); wait for it to finish"
        )
    info = version_get(model=environment.model_name, version=version)
    if info is None:
        raise DeploymentError(f"version {version!r} of {environment.model_name} does not exist")
    if not info.promotable:
        raise DeploymentError(
            f"version {version} is {info.status}"
            + (f" ({info.status_detail})" if info.status_detail else "")
            + "; only valid versions can be promoted"
        )
    try:
        previous = pointer_loads(ssm.get_parameter(name=environment.ssm_parameter))
    except AwsError as exc:
        raise DeploymentUpstreamError(f"could not read the current pointer: {exc}") from exc
    now = timezone.now()
    try:
        pointer = pointer_build(
            info=info,
            bucket=settings.MODELS_BUCKET,
            promoted_by=user.get_username(),
            reason=reason,
            now=now,
        )
    except PointerError as exc:
        raise DeploymentError(str(exc)) from exc
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                environment=environment,
                kind=kind,
                from_version=(previous or {}).get("version", ""),
                to_version=version,
                requested_by=user,
                reason=reason,
                pointer=pointer,
                previous_pointer=previous,
            )
            try:
                parameter_version = ssm.put_parameter(
                    name=environment.ssm_parameter,
                    value=pointer_dumps(pointer),
                    description=f"{environment}: {version} by {user.get_username()}",
                )
            except AwsError as exc:
                raise DeploymentUpstreamError(f"could not write the pointer: {exc}") from exc
            Environment.objects.filter(pk=environment.pk).update(promoted_version=version)
            _event(
                deployment,
                f"{user.get_username()} pointed {environment} at {version} "
                f"(SSM {environment.ssm_parameter} version {parameter_version})",
            )
            transaction.on_commit(lambda: _enqueue(deployment.pk))
    except IntegrityError as exc:
        # The partial unique index: someone else started one a moment ago.
        raise DeploymentConflict(f"{environment} already has a deployment in flight") from exc
    return deployment


def _enqueue(deployment_id: int) -> None:
    from dashboard.deployments.tasks import deployment_run

    try:
        deployment_run.delay(deployment_id)
    except Exception as exc:  # the broker is down: don't leave the pointer changed
        logger.exception("could not enqueue deployment %s", deployment_id)
        deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
        _finish(
            deployment,
            Deployment.Status.FAILED,
            error=f"could not queue the deployment (is Redis up?): {exc}",
            restore_pointer=True,
        )


def _finish(
    deployment: Deployment,
    status: str,
    *,
    error: str = "",
    live: str = "",
    restore_pointer: bool = False,
) -> bool:
    """Move an in-flight deployment to a final status, once. Return False if
    another worker finished it first."""
    owned = Deployment.objects.filter(pk=deployment.pk, status__in=Deployment.IN_FLIGHT)
    if deployment.runner:
        owned = owned.filter(runner=deployment.runner)
    if restore_pointer and owned.exists():
        _restore_pointer(deployment)
    now = timezone.now()
    changed = owned.update(
        status=status, error=error, live_version=live, finished_at=now, heartbeat_at=now
    )
    if changed:
        deployment.status, deployment.error, deployment.finished_at = status, error, now
        _event(
            deployment,
            f"finished: {status}" + (f": {error}" if error else ""),
            level="info" if status == Deployment.Status.SUCCEEDED else "error",
        )
    return bool(changed)


def _restore_pointer(deployment: Deployment) -> None:
    """Put the previous pointer back, so that the next cold start of the
    service serves what it served before this deployment."""
    environment = deployment.environment
    previous = deployment.previous_pointer
    if not previous:
        _event(deployment, "no previous pointer to restore", level="warning")
        return
    try:
        current = pointer_loads(ssm.get_parameter(name=environment.ssm_parameter))
        if current != deployment.pointer:
            _event(
                deployment,
                "the pointer was changed by someone else meanwhile; left as it is",
                level="warning",
            )
            return
        ssm.put_parameter(
            name=environment.ssm_parameter,
            value=pointer_dumps(previous),
            description=f"{environment}: restored {previous.get('version')} after #{deployment.pk}",
        )
        Environment.objects.filter(pk=environment.pk).update(
            promoted_version=str(previous.get("version") or "")
        )
        _event(deployment, f"pointer restored to {previous.get('version')}")
    except AwsError as exc:
        _event(deployment, f"could not restore the pointer: {exc}", level="error")


class _LostLease(Exception):
    """Another worker took this deployment over (this one went quiet too long)."""


def _heartbeat(deployment: Deployment) -> None:
    """Renew the lease; raise _LostLease if another worker holds it now."""
    renewed = Deployment.objects.filter(
        pk=deployment.pk, runner=deployment.runner, status__in=Deployment.IN_FLIGHT
    ).update(heartbeat_at=timezone.now())
    if not renewed:
        raise _LostLease


def deployment_execute(*, deployment_id: int) -> None:
    """Run a deployment to its end.

    Idempotent and safe under redelivery: each run takes a lease (``runner``).
    A pending deployment is claimed; an in-progress one is taken over only
    when its worker has not renewed the lease for DEPLOYMENT_STALE_SECONDS
    (it died or hangs), and the new worker adopts the App Runner operation
    the old one started instead of starting another. A worker that finds its
    lease taken stops without touching the deployment again.
    """
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = Deployment.objects.filter(pk=deployment_id, status=Deployment.Status.PENDING).update(
        status=Deployment.Status.IN_PROGRESS, started_at=now, heartbeat_at=now, runner=token
    )
    if not claimed:
        stale = now - dt.timedelta(seconds=settings.DEPLOYMENT_STALE_SECONDS)
        claimed = Deployment.objects.filter(
            Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True) | Q(runner=""),
            pk=deployment_id,
            status=Deployment.Status.IN_PROGRESS,
        ).update(heartbeat_at=now, runner=token)
        resumed = bool(claimed)
    else:
        resumed = False
    deployment = Deployment.objects.select_related("environment").filter(pk=deployment_id).first()
    if deployment is None or deployment.status in Deployment.FINAL or not claimed:
        return  # finished, or another live worker holds the lease
    _event(deployment, "worker resumed an interrupted deployment" if resumed else "worker started")
    started = deployment.started_at or now
    deadline = started + dt.timedelta(seconds=settings.DEPLOYMENT_TIMEOUT_SECONDS)
    environment = deployment.environment
    try:
        if not deployment.operation_id:
            operation_id = _start_operation(deployment, deadline, adopt=resumed)
            if operation_id is None:
                return
            saved = Deployment.objects.filter(pk=deployment.pk, runner=token).update(
                operation_id=operation_id
            )
            if not saved:
                raise _LostLease
            deployment.operation_id = operation_id
        _follow(deployment, environment, deadline)
    except _LostLease:
        logger.warning("deployment %s: another worker took it over; stopping", deployment.pk)


def _adoptable_operation(deployment: Deployment) -> str | None:
    """An App Runner deployment started since this deployment began: the one a
    previous worker started before it died (never start a second one)."""
    since = (deployment.started_at or timezone.now()) - dt.timedelta(seconds=5)
    for operation in apprunner.list_operations(service_arn=deployment.environment.service_arn):
        if (
            operation.type == "START_DEPLOYMENT"
            and operation.started_at
            and operation.started_at >= since
        ):
            return operation.id
    return None


def _start_operation(deployment: Deployment, deadline: dt.datetime, *, adopt: bool) -> str | None:
    environment = deployment.environment
    waiting_logged = False
    while True:
        try:
            if adopt:
                adopted = _adoptable_operation(deployment)
                if adopted:
                    _event(deployment, f"adopted App Runner operation {adopted}")
                    return adopted
            operation_id = apprunner.start_deployment(service_arn=environment.service_arn)
            _event(deployment, f"App Runner operation {operation_id} started")
            return operation_id
        except AwsConflictError:
            # Another operation (a configuration change, or the one a dead
            # worker started) is running on the service: wait, then adopt or start.
            adopt = True
            if not waiting_logged:
                _event(deployment, "the service is busy with another operation; waiting")
                waiting_logged = True
        except AwsError as exc:
            if not exc.transient:
                _finish(
                    deployment,
                    Deployment.Status.FAILED,
                    error=f"App Runner refused the deployment: {exc}",
                    restore_pointer=True,
                )
                return None
            _event(deployment, f"App Runner did not answer; retrying: {exc}", level="warning")
        if timezone.now() >= deadline:
            _finish(
                deployment,
                Deployment.Status.FAILED,
                error="timed out waiting for the service to accept a deployment",
                restore_pointer=True,
            )
            return None
        _heartbeat(deployment)
        time.sleep(settings.DEPLOYMENT_POLL_SECONDS)


def _follow(deployment: Deployment, environment: Environment, deadline: dt.datetime) -> None:
    last_status = ""
    while True:
        try:
            operation = apprunner.get_operation(
                service_arn=environment.service_arn, operation_id=deployment.operation_id
            )
        except AwsError as exc:
            if not exc.transient and not isinstance(exc, AwsNotFoundError):
                _finish(
                    deployment,
                    Deployment.Status.FAILED,
                    error=f"could not follow the operation: {exc}",
                    restore_pointer=True,
                )
                return
            _event(deployment, f"retrying: {exc}", level="warning")
            operation = None
        if operation is not None and operation.status != last_status:
            last_status = operation.status
            _event(deployment, f"App Runner operation is {operation.status}")
        if operation is not None and not operation.active:
            _conclude(deployment, environment, operation.status)
            return
        if timezone.now() >= deadline:
            _finish(
                deployment,
                Deployment.Status.FAILED,
                error=f"timed out after {settings.DEPLOYMENT_TIMEOUT_SECONDS} s "
                f"(App Runner operation {last_status or 'not found'})",
                restore_pointer=True,
            )
            return
        _heartbeat(deployment)
        time.sleep(settings.DEPLOYMENT_POLL_SECONDS)


def _conclude(deployment: Deployment, environment: Environment, status: str) -> None:
    version = deployment.to_version
    if status == "SUCCEEDED":
        live = live_version(base_url=environment_base_url(environment))
        if live.version == version:
            _event(deployment, f"the service reports version {version}")
            _finish(deployment, Deployment.Status.SUCCEEDED, live=version)
        elif live.version is None:
            _event(deployment, f"could not confirm the live version: {live.error}", level="warning")
            _finish(deployment, Deployment.Status.SUCCEEDED)
        else:
            _finish(
                deployment,
                Deployment.Status.FAILED,
                error=f"App Runner finished but the service reports version {live.version}, "
                f"not {version}",
                live=live.version,
            )
        return
    if status == "ROLLBACK_SUCCEEDED":
        live = live_version(base_url=environment_base_url(environment))
        _finish(
            deployment,
            Deployment.Status.ROLLED_BACK,
            error=f"the new instance with {version} never became healthy; App Runner kept "
            f"the previous one serving" + (f" (version {live.version})" if live.version else ""),
            live=live.version or "",
            restore_pointer=True,
        )
        return
    _finish(
        deployment,
        Deployment.Status.FAILED,
        error=f"App Runner operation ended {status}",
        restore_pointer=True,
    )


def deployments_resume_stale() -> list[int]:
    """Re-enqueue in-flight deployments whose worker stopped reporting (it
    died, or the broker lost the message). Return their ids."""
    from dashboard.deployments.tasks import deployment_run

    cutoff = timezone.now() - dt.timedelta(seconds=settings.DEPLOYMENT_STALE_SECONDS)
    stale = list(
        Deployment.objects.filter(
            status=Deployment.Status.IN_PROGRESS, heartbeat_at__lt=cutoff
        ).values_list("pk", flat=True)
    ) + list(
        Deployment.objects.filter(
            status=Deployment.Status.PENDING, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    for pk in stale:
        Deployment.objects.filter(pk=pk).update(heartbeat_at=timezone.now())
        deployment_run.delay(pk)
    return stale


def deployment_rollback(
    *, environment: Environment, user: Any, reason: str = "", kind: str = Deployment.Kind.ROLLBACK
) -> Deployment:
    """Deploy the version the environment served before the one it serves now.
    Raises DeploymentError when there is nothing different to go back to."""
    _check_permission(user, environment)
    environment.refresh_from_db(fields=["promoted_version"])
    target = rollback_target(environment=environment)
    if target is None:
        raise DeploymentError(
            f"{environment} has no earlier live version to roll back to "
            f"(no successful deployment replaced another version)"
        )
    version, replaced_by = target
    return deployment_start(
        environment=environment,
        version=version,
        user=user,
        reason=reason or f"rollback of #{replaced_by.pk} ({replaced_by.to_version})",
        kind=kind,
    )


def rollback_target(*, environment: Environment) -> tuple[str, Deployment] | None:
    """(version to go back to, the deployment that replaced it), or None.

    The current version is the environment's pointer; the target is what the
    last successful deployment *to* that version replaced, skipping
    redeployments of the same version."""
    current = environment.promoted_version
    if not current:
        return None
    last = (
        environment.deployments.filter(status=Deployment.Status.SUCCEEDED, to_version=current)
        .exclude(from_version="")
        .exclude(from_version=current)
        .order_by("-finished_at", "-id")
        .first()
    )
    return (last.from_version, last) if last is not None else None


def environment_ensure(
    *,
    model: str,
    name: str,
    ssm_parameter: str,
    service_arn: str,
    service_url: str = "",
    requires_admin: bool = False,
    position: int = 0,
) -> Environment:
    """Create or update an environment's settings (admin pages, local seed)."""
    from dashboard.registry.names import validate_model_name

    validate_model_name(model)
    validate_environment_name(name)
    environment, _ = Environment.objects.update_or_create(
        model_name=model,
        name=name,
        defaults={
            "ssm_parameter": ssm_parameter,
            "service_arn": service_arn,
            "service_url": service_url,
            "requires_admin": requires_admin,
            "position": position,
        },
    )
    return environment


def environments_refresh_pointers() -> int:
    """Re-read every environment's pointer from SSM into ``promoted_version``
    (someone may have changed it outside the dashboard). Return how many changed."""
    changed = 0
    for environment in Environment.objects.all():
        try:
            pointer = pointer_loads(ssm.get_parameter(name=environment.ssm_parameter))
        except AwsError:
            logger.warning("could not read the pointer of %s", environment, exc_info=True)
            continue
        version = str((pointer or {}).get("version") or "")
        if version != environment.promoted_version:
            Environment.objects.filter(pk=environment.pk).update(promoted_version=version)
            changed += 1
    return changed
