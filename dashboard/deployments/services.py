"""Writes about deployments and environments, on behalf of a person.

A request only records a deployment row (or refuses with a reason); nothing
calls AWS inside a database transaction. The reconciler
(``dashboard/deployments/reconciler.py``) then takes the row through its
states. The rules of an environment (who may promote, approvals, a required
reason, a freeze) are checked here.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.accounts.roles import ADMIN, DEPLOYER, user_has_role
from dashboard.aws import s3, ssm
from dashboard.aws.errors import AwsError
from dashboard.deployments import notify
from dashboard.deployments.models import (
    Deployment,
    DeploymentEvent,
    Environment,
    PointerChange,
    PointerWrite,
)
from dashboard.deployments.pointer import (
    PointerError,
    pointer_build,
    pointer_dumps,
    pointer_loads,
    pointer_restamp,
)
from dashboard.deployments.reconciler import enqueue
from dashboard.deployments.selectors import (
    deployment_in_flight,
    drift_of,
    environment_live_deployment,
    environment_remote_state,
    rollback_plan,
)
from dashboard.deployments.statecache import state_forget
from dashboard.registry.names import validate_environment_name, validate_version_name
from dashboard.registry.selectors import version_get

logger = logging.getLogger(__name__)

Status = Deployment.Status


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


def _username(user: Any) -> str:
    return str(user.get_username()) if user is not None else ""


def _check_permission(user: Any, environment: Environment) -> None:
    needed = ADMIN if environment.promote_role == Environment.PromoteRole.ADMIN else DEPLOYER
    if not user_has_role(user, needed):
        raise DeploymentForbidden(f"deploying to {environment} needs the {needed} role")


def _clean_reason(reason: str, *, required: bool, what: str) -> str:
    reason = (reason or "").strip()
    if len(reason) > 500:
        raise DeploymentError("reason must be at most 500 characters")
    if required and not reason:
        raise DeploymentError(f"{what} needs a reason: say why")
    return reason


def _conflict(environment: Environment) -> DeploymentConflict:
    in_flight = deployment_in_flight(environment=environment)
    if in_flight is None:
        return DeploymentConflict(f"{environment} already has a deployment in flight")
    return DeploymentConflict(
        f"{environment} already has a deployment in flight (#{in_flight.pk}, "
        f"{in_flight.to_version}, {in_flight.status}); wait for it to finish"
    )


def _create(environment: Environment, user: Any, **fields: Any) -> Deployment:
    """Insert the deployment row; the partial unique index turns a concurrent
    second one into DeploymentConflict (exactly one wins)."""
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(environment=environment, **fields)
            notify.deployment_requested(deployment, user)
            if deployment.status == Status.AWAITING_APPROVAL:
                _event(
                    deployment,
                    f"{deployment.requested_by_name} asked to deploy {deployment.to_version}; "
                    "waiting for approval",
                )
            else:
                _event(deployment, f"{deployment.requested_by_name or 'modeldeck'} requested it")
                transaction.on_commit(lambda: enqueue(deployment.pk))
    except IntegrityError as exc:
        raise _conflict(environment) from exc
    return deployment


def deployment_start(
    *,
    environment: Environment,
    version: str,
    user: Any,
    reason: str = "",
) -> Deployment:
    """Ask to make ``version`` live in ``environment`` (a promotion).

    Returns the new deployment: ``pending`` (the reconciler starts it at once)
    or ``awaiting_approval``. Raises DeploymentError (with an HTTP status)
    when it cannot; then nothing was written.
    """
    _check_permission(user, environment)
    try:
        validate_version_name(version)
    except ValueError as exc:
        raise DeploymentError(str(exc)) from exc
    reason = _clean_reason(reason, required=environment.requires_reason, what="this environment")
    if environment.frozen:
        raise DeploymentConflict(
            f"{environment} is frozen"
            + (f" ({environment.freeze_reason})" if environment.freeze_reason else "")
            + "; an admin lifts the freeze on its settings page (rollbacks still work)"
        )
    if deployment_in_flight(environment=environment) is not None:
        raise _conflict(environment)
    info = version_get(model=environment.model_name, version=version)
    if info is None:
        raise DeploymentError(f"version {version!r} of {environment.model_name} does not exist")
    if not info.promotable:
        raise DeploymentError(
            f"version {version} is {info.status}"
            + (f" ({info.status_detail})" if info.status_detail else "")
            + "; only valid versions can be promoted"
        )
    now = timezone.now()
    try:
        pointer = pointer_build(
            info=info,
            bucket=settings.MODELS_BUCKET,
            promoted_by=_username(user),
            reason=reason,
            now=now,
        )
    except PointerError as exc:
        raise DeploymentError(str(exc)) from exc
    live = environment_live_deployment(environment=environment)
    approval = environment.requires_approval
    return _create(
        environment,
        user,
        kind=Deployment.Kind.PROMOTE,
        status=Status.AWAITING_APPROVAL if approval else Status.PENDING,
        step=Deployment.Step.APPROVAL if approval else Deployment.Step.WRITE_POINTER,
        from_version=live.to_version if live else environment.promoted_version,
        to_version=version,
        pointer=pointer,
        requested_by=user,
        requested_by_name=_username(user),
        reason=reason,
        expires_at=now + dt.timedelta(hours=environment.approval_expiry_hours)
        if approval
        else None,
        next_step_at=None if approval else now,
        queued_at=None if approval else now,
    )


def deployment_rollback(*, environment: Environment, user: Any, reason: str) -> Deployment:
    """Redeploy the exact pointer that was live before the live deployment
    (its S3 object version and SHA-256, even if the version was since deleted
    from the list). Rollbacks skip approval and the freeze: they are how an
    incident ends. Pressing it again goes one further back, never forth."""
    _check_permission(user, environment)
    reason = _clean_reason(reason, required=True, what="a rollback")
    if deployment_in_flight(environment=environment) is not None:
        raise _conflict(environment)
    plan = rollback_plan(environment=environment)
    if plan is None:
        raise DeploymentError(
            f"{environment} has nothing earlier to roll back to (no successful deployment "
            "replaced an earlier version)"
        )
    target = plan.pointer
    try:
        found = s3.head_object(
            bucket=str(target.get("bucket")),
            key=str(target.get("key")),
            version_id=str(target.get("s3_version_id")),
        )
    except AwsError as exc:
        raise DeploymentUpstreamError(f"could not check the artifact in S3: {exc}") from exc
    if found is None:
        raise DeploymentError(
            f"cannot roll back to {target.get('version')}: its artifact (s3://"
            f"{target.get('bucket')}/{target.get('key')} version {target.get('s3_version_id')}) "
            "no longer exists"
        )
    now = timezone.now()
    return _create(
        environment,
        user,
        kind=Deployment.Kind.ROLLBACK,
        status=Status.PENDING,
        step=Deployment.Step.WRITE_POINTER,
        from_version=plan.live.to_version,
        to_version=str(target.get("version") or ""),
        pointer=pointer_restamp(target, promoted_by=_username(user), reason=reason, now=now),
        requested_by=user,
        requested_by_name=_username(user),
        reason=reason,
        undoes=plan.live,
        returns_to=plan.source,
        next_step_at=now,
        queued_at=now,
    )


def _awaiting(deployment_id: int) -> Deployment:
    deployment = Deployment.objects.select_related("environment").filter(pk=deployment_id).first()
    if deployment is None:
        raise DeploymentError(f"no deployment #{deployment_id}")
    return deployment


def _check_decider(deployment: Deployment, user: Any, verb: str) -> None:
    environment = deployment.environment
    needed = ADMIN if environment.promote_role == Environment.PromoteRole.ADMIN else DEPLOYER
    if not user_has_role(user, needed):
        raise DeploymentForbidden(
            f"to {verb} a deployment to {environment} needs the {needed} role"
        )
    if deployment.status != Status.AWAITING_APPROVAL:
        raise DeploymentConflict(
            f"deployment #{deployment.pk} is {deployment.status}, not awaiting approval"
        )
    if deployment.requested_by_id is not None and deployment.requested_by_id == user.pk:
        raise DeploymentConflict(
            f"you requested deployment #{deployment.pk}: someone else must {verb} it"
        )


def deployment_approve(*, deployment_id: int, user: Any, reason: str = "") -> Deployment:
    """A second person approves a waiting promotion: it starts now."""
    deployment = _awaiting(deployment_id)
    _check_decider(deployment, user, "approve")
    reason = _clean_reason(reason, required=False, what="")
    environment = deployment.environment
    if environment.frozen:
        raise DeploymentConflict(f"{environment} is frozen; lift the freeze before approving")
    now = timezone.now()
    with transaction.atomic():
        changed = Deployment.objects.filter(
            pk=deployment.pk, status=Status.AWAITING_APPROVAL, expires_at__gt=now
        ).update(
            status=Status.PENDING,
            step=Deployment.Step.WRITE_POINTER,
            approved_by=user,
            approved_by_name=_username(user),
            decision_reason=reason,
            decided_at=now,
            next_step_at=now,
            queued_at=now,
        )
        if not changed:
            raise DeploymentConflict(
                f"deployment #{deployment.pk} is no longer awaiting approval (decided or expired)"
            )
        deployment.refresh_from_db()
        _event(
            deployment,
            f"{_username(user)} approved it" + (f": {reason}" if reason else ""),
        )
        notify.deployment_decided(deployment, user, approved=True)
        transaction.on_commit(lambda: enqueue(deployment.pk))
    return deployment


def deployment_reject(*, deployment_id: int, user: Any, reason: str = "") -> Deployment:
    """A second person rejects a waiting promotion: it ends, nothing changed."""
    deployment = _awaiting(deployment_id)
    _check_decider(deployment, user, "reject")
    reason = _clean_reason(reason, required=False, what="")
    now = timezone.now()
    with transaction.atomic():
        changed = Deployment.objects.filter(
            pk=deployment.pk, status=Status.AWAITING_APPROVAL
        ).update(
            status=Status.REJECTED,
            step=Deployment.Step.DONE,
            approved_by=user,
            approved_by_name=_username(user),
            decision_reason=reason,
            decided_at=now,
            finished_at=now,
        )
        if not changed:
            raise DeploymentConflict(f"deployment #{deployment.pk} is no longer awaiting approval")
        deployment.refresh_from_db()
        _event(deployment, f"{_username(user)} rejected it" + (f": {reason}" if reason else ""))
        notify.deployment_decided(deployment, user, approved=False)
        notify.deployment_finished(deployment)
    return deployment


def deployment_abort(*, deployment_id: int, user: Any, reason: str) -> Deployment:
    """Stop a deployment in flight and put back what was live. A request still
    awaiting approval is withdrawn (by its requester) or rejected instead.

    The reconciler does the work at its next step: it asks the target to stop
    its operation where the target can (ECS), or follows it to its end (App
    Runner cannot stop one), then restores the pointer or rolls back."""
    deployment = _awaiting(deployment_id)
    _check_permission(user, deployment.environment)
    reason = _clean_reason(reason, required=True, what="stopping a deployment")
    if deployment.status == Status.AWAITING_APPROVAL:
        if deployment.requested_by_id != getattr(user, "pk", None):
            raise DeploymentConflict(
                f"deployment #{deployment.pk} awaits approval: reject it instead"
            )
        return deployment_reject(deployment_id=deployment_id, user=user, reason=reason)
    now = timezone.now()
    with transaction.atomic():
        changed = Deployment.objects.filter(
            pk=deployment.pk,
            status__in=Deployment.RUNNING,
            abort_requested_at__isnull=True,
            outcome="",
        ).update(
            abort_requested_at=now,
            abort_requested_by_name=_username(user),
            abort_reason=reason,
            next_step_at=now,
        )
        if not changed:
            raise DeploymentConflict(
                f"deployment #{deployment.pk} is {deployment.status}"
                + (
                    ", already ending"
                    if deployment.outcome or deployment.abort_requested_at
                    else ""
                )
                + ": nothing to stop"
            )
        deployment.refresh_from_db()
        _event(deployment, f"{_username(user)} asked to stop it: {reason}", level="warning")
        notify.deployment_aborted(deployment, user)
        transaction.on_commit(lambda: enqueue(deployment.pk))
    return deployment


def pointer_restore(*, environment: Environment, user: Any) -> int:
    """Drift fix: write the pointer of the environment's live deployment back
    to SSM (after a change made outside the dashboard). Return the new SSM
    parameter version. Needs the environment's promote role."""
    _check_permission(user, environment)
    if deployment_in_flight(environment=environment) is not None:
        raise _conflict(environment)
    live = environment_live_deployment(environment=environment)
    if live is None:
        raise DeploymentError(
            f"{environment} has no successful deployment whose pointer could be restored"
        )
    try:
        version = ssm.put_parameter(
            name=environment.ssm_parameter,
            value=pointer_dumps(live.pointer),
            description=f"{environment}: {_username(user)} restored {live.to_version}",
        )
    except AwsError as exc:
        raise DeploymentUpstreamError(f"could not write the pointer: {exc}") from exc
    with transaction.atomic():
        PointerWrite.objects.update_or_create(
            environment=environment,
            parameter_version=version,
            defaults={
                "deployment": live,
                "purpose": PointerWrite.Purpose.RESTORE,
                "version": live.to_version,
                "sha256": live.sha256,
                "written_by_name": _username(user),
            },
        )
        notify.pointer_restored(
            environment, user, version=live.to_version, parameter_version=version
        )
    state_forget(environment.pk)
    return version


RULE_FIELDS = (
    "promote_role",
    "requires_approval",
    "approval_expiry_hours",
    "requires_reason",
    "frozen",
    "freeze_reason",
)


def environment_rules_update(
    *, environment: Environment, user: Any, **rules: Any
) -> dict[str, tuple[Any, Any]]:
    """Change an environment's rules (admins only). Return {field: (old, new)}
    of what changed."""
    if not user_has_role(user, ADMIN):
        raise DeploymentForbidden("changing an environment's rules needs the admin role")
    unknown = set(rules) - set(RULE_FIELDS)
    if unknown:
        raise DeploymentError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    if rules.get("promote_role", environment.promote_role) not in Environment.PromoteRole.values:
        raise DeploymentError("promote_role must be deployer or admin")
    hours = rules.get("approval_expiry_hours", environment.approval_expiry_hours)
    if not isinstance(hours, int) or not 1 <= hours <= 24 * 30:
        raise DeploymentError("approval requests must expire after 1 to 720 hours")
    if len(str(rules.get("freeze_reason", ""))) > 500:
        raise DeploymentError("the freeze reason must be at most 500 characters")
    changes = {
        name: (getattr(environment, name), value)
        for name, value in rules.items()
        if getattr(environment, name) != value
    }
    if changes:
        with transaction.atomic():
            for name, (_, value) in changes.items():
                setattr(environment, name, value)
            environment.save(update_fields=list(changes))
            notify.environment_rules_changed(environment, user, changes)
    return changes


def environment_ensure(
    *,
    model: str,
    name: str,
    ssm_parameter: str,
    service_arn: str,
    service_url: str = "",
    target: str = Environment.Target.APPRUNNER,
    promote_role: str = Environment.PromoteRole.DEPLOYER,
    position: int = 0,
) -> Environment:
    """Create or update an environment's settings (admin pages, local seed)."""
    from dashboard.deployments.validators import (
        validate_ssm_parameter_name,
        validate_target_arn,
        validate_target_url,
    )
    from dashboard.registry.names import validate_model_name

    validate_model_name(model)
    validate_environment_name(name)
    validate_ssm_parameter_name(ssm_parameter)
    validate_target_arn(target, service_arn)
    validate_target_url(target, service_url)
    environment, _ = Environment.objects.update_or_create(
        model_name=model,
        name=name,
        defaults={
            "ssm_parameter": ssm_parameter,
            "service_arn": service_arn,
            "service_url": service_url,
            "target": target,
            "promote_role": promote_role,
            "position": position,
        },
    )
    return environment


def environments_refresh_pointers() -> int:
    """Look at each pointer's SSM history for versions the dashboard did not
    write and record them as changes made outside the dashboard (never
    adopting them: the drift check shows them with a fix). The first look at an
    environment takes what SSM holds as its starting point. Return how many
    outside changes were found."""
    found = 0
    for environment in Environment.objects.all():
        try:
            found += _watch_pointer(environment)
        except AwsError:
            logger.warning("could not read the pointer history of %s", environment, exc_info=True)
    return found


def _watch_pointer(environment: Environment) -> int:
    current = ssm.get_parameter_version(name=environment.ssm_parameter)
    if current is None:
        return 0
    seen = environment.pointer_version_seen
    if seen is not None and current.version <= seen:
        return 0
    if seen is None:
        # First sight: what is there now is where this environment starts.
        pointer = pointer_loads(current.value)
        with transaction.atomic():
            PointerWrite.objects.get_or_create(
                environment=environment,
                parameter_version=current.version,
                defaults={
                    "purpose": PointerWrite.Purpose.INITIAL,
                    "version": str((pointer or {}).get("version") or ""),
                    "sha256": str((pointer or {}).get("sha256") or ""),
                },
            )
            Environment.objects.filter(pk=environment.pk).update(
                pointer_version_seen=current.version,
                promoted_version=environment.promoted_version
                or str((pointer or {}).get("version") or ""),
            )
        return 0
    written = set(
        PointerWrite.objects.filter(
            environment=environment, parameter_version__gt=seen
        ).values_list("parameter_version", flat=True)
    )
    outside = [
        item
        for item in ssm.get_parameter_history(name=environment.ssm_parameter)
        if item.version > seen and item.version not in written
    ]
    if outside and deployment_in_flight(environment=environment) is not None:
        # A deployment may be about to record its own write: look next time.
        newest_written = max(written, default=seen)
        outside = [item for item in outside if item.version < newest_written]
    new = 0
    with transaction.atomic():
        for item in outside:
            pointer = pointer_loads(item.value)
            change, created = PointerChange.objects.get_or_create(
                environment=environment,
                parameter_version=item.version,
                defaults={
                    "version": str((pointer or {}).get("version") or "")[:64],
                    "sha256": str((pointer or {}).get("sha256") or "")[:64],
                    "modified_by": item.modified_by[:2048],
                    "modified_at": item.modified_at,
                },
            )
            if created:
                new += 1
                notify.pointer_changed_outside(
                    environment,
                    parameter_version=change.parameter_version,
                    version=change.version,
                    sha256=change.sha256,
                    modified_by=change.modified_by,
                )
        if deployment_in_flight(environment=environment) is None:
            Environment.objects.filter(pk=environment.pk).update(
                pointer_version_seen=current.version
            )
    if new:
        state_forget(environment.pk)
    return new


def environments_check_drift() -> int:
    """Announce (drift.detected) each environment whose pointer, service and
    last successful deployment newly disagree; return how many were announced."""
    announced = 0
    for environment in Environment.objects.all():
        remote = environment_remote_state(environment, fresh=True)
        deployed = environment_live_deployment(environment=environment)
        drift = drift_of(
            remote=remote,
            deployed=deployed,
            in_flight=deployment_in_flight(environment=environment),
        )
        signature = (
            ""
            if drift is None
            else f"{drift.kind}:{drift.pointer_sha256}:{drift.live_sha256}:{drift.deployed_sha256}"
        )[:300]
        if signature == environment.drift_reported:
            continue
        with transaction.atomic():
            Environment.objects.filter(pk=environment.pk).update(drift_reported=signature)
            if drift is not None:
                notify.drift_detected(environment, drift=drift.as_dict(), deployed=deployed)
                announced += 1
    return announced
