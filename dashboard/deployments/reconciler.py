"""The deployment reconciler: moves deployments through their states, one
short step at a time.

A deployment row says what to do next (``step``) and when (``next_step_at``).
``deployment_advance`` claims the row with a conditional UPDATE (a lease that
its own thread renews while the step runs, so a dead worker's lease lapses
within ``DEPLOYMENT_LEASE_SECONDS``), takes the step, and records the result
and the next step in one transaction that only succeeds while it still holds
the claim. A step reads what AWS says before acting, so a step repeated after
a crash finds its own earlier work and adopts it instead of doing it twice:

    write_pointer  PutParameter (adopted when SSM already holds this pointer)
    start          UpdateService pinning that parameter version (adopted when
                   the service already runs it, or an operation was started since
                   ``start_requested_at``)
    follow         one look at the operation
    verify         the service's /version must report the pointer's SHA-256
    bake           the environment's alarms must stay quiet for N minutes
    restore        a failure: SSM must name what the service serves, and the
                   service must serve a known-good version (else auto-rollback)

``deployments_reconcile`` (beat, every few seconds) enqueues every due row, so
a lost message, a killed worker or a restarted Redis only delays a step.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.aws import s3, ssm
from dashboard.aws.errors import AwsError
from dashboard.deployments import bake, notify
from dashboard.deployments.live import LiveVersion, live_version
from dashboard.deployments.models import Deployment, DeploymentEvent, Environment, PointerWrite
from dashboard.deployments.pointer import (
    pin_parse,
    pointer_dumps,
    pointer_loads,
    pointer_restamp,
    pointer_same_artifact,
)
from dashboard.deployments.statecache import state_forget
from dashboard.deployments.targets import (
    DeployTarget,
    Phase,
    TargetBusy,
    TargetError,
    target_for,
)

logger = logging.getLogger(__name__)

Status = Deployment.Status
Step = Deployment.Step
# How far back (on the target's clock) an operation may have started and still
# be the one an interrupted step sent.
START_SKEW = dt.timedelta(seconds=30)
# A step AWS refuses (not throttles) this many times in a row fails the deployment.
REFUSALS_BEFORE_FAILING = 3


# --- the result of a step ------------------------------------------------------------


@dataclass
class Transition:
    """What a step decided: fields to set, log lines, and follow-ups."""

    updates: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    wait: float = 0.0  # seconds until the next step (0: right away)
    pointer_write: tuple[int, str] | None = None  # (parameter version, purpose)
    finish: str = ""  # a final status
    auto_rollback: dict[str, Any] | None = None  # the rollback deployment to create
    announce: str = ""  # a webhook event (deployment.started ...)

    def log(self, message: str, level: str = "info") -> Transition:
        self.events.append((level, message))
        return self


class _LostClaim(Exception):
    """Another worker holds the deployment now (this one's lease lapsed)."""


# --- claiming ------------------------------------------------------------------------------


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.DEPLOYMENT_LEASE_SECONDS)


def _claim(deployment_id: int) -> str | None:
    """Take the deployment's lease if it is due and free; return the token."""
    now = timezone.now()
    token = uuid.uuid4().hex
    claimed = (
        Deployment.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            pk=deployment_id,
            status__in=Deployment.RUNNING,
        )
        .filter(Q(next_step_at__isnull=True) | Q(next_step_at__lte=now))
        .update(claim_token=token, claimed_until=now + _lease())
    )
    return token if claimed else None


class _Renewal:
    """Renews a claim while its step runs, from a thread of the same process:
    when the process dies, the renewals stop and the lease lapses."""

    def __init__(self, deployment_id: int, token: str) -> None:
        self._id, self._token = deployment_id, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-renewal")

    def __enter__(self) -> _Renewal:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = settings.DEPLOYMENT_LEASE_SECONDS / 3
        try:
            while not self._stop.wait(interval):
                renewed = Deployment.objects.filter(pk=self._id, claim_token=self._token).update(
                    claimed_until=timezone.now() + _lease()
                )
                if not renewed:
                    return
        except Exception:  # the step will find out when it releases
            logger.warning("deployment %s: could not renew the lease", self._id, exc_info=True)
        finally:
            connection.close()


def _save(deployment: Deployment, token: str, **fields: Any) -> None:
    """Record ``fields`` mid-step, only while holding the claim."""
    saved = Deployment.objects.filter(pk=deployment.pk, claim_token=token).update(**fields)
    if not saved:
        raise _LostClaim
    for name, value in fields.items():
        setattr(deployment, name, value)


# --- driving -------------------------------------------------------------------------------


def deployment_advance(*, deployment_id: int, max_steps: int = 25) -> str | None:
    """Take the deployment's steps while they are due at once; return its
    status afterwards (None when it does not exist). Safe to call any number
    of times from anywhere: a step runs only under the row's claim."""
    for _ in range(max_steps):
        token = _claim(deployment_id)
        if token is None:
            break
        try:
            with _Renewal(deployment_id, token):
                deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
                transition = _run_step(deployment, token)
            _apply(deployment, token, transition)
        except _LostClaim:
            logger.warning("deployment %s: lost its claim to another worker", deployment_id)
            break
        if transition.wait > 0 or transition.finish:
            break
    row = Deployment.objects.filter(pk=deployment_id).values_list("status", flat=True).first()
    return row


def _run_step(deployment: Deployment, token: str) -> Transition:
    if deployment.abort_requested_at is not None and not deployment.outcome:
        return _aborting(deployment, token)
    handler = _STEPS.get(deployment.step)
    if handler is None:  # a row from the future or hand-edited: fail loudly, restore
        return _failing(deployment, f"unknown step {deployment.step!r}")
    try:
        return handler(deployment, token)
    except _LostClaim:
        raise
    except AwsError as exc:
        if deployment.step != Step.RESTORE and _past_deadline(deployment):
            return _failing(
                deployment,
                f"gave up after {settings.DEPLOYMENT_TIMEOUT_SECONDS} s of AWS errors: {exc}",
            )
        if exc.transient:
            return _retry(deployment, f"AWS did not answer ({exc}); retrying")
        if deployment.step != Step.RESTORE and deployment.attempts + 1 >= REFUSALS_BEFORE_FAILING:
            # Refused again and again (permissions, a bad configuration): say so
            # now rather than at the timeout. Restoring is never given up.
            return _failing(deployment, f"AWS refused a call: {exc}")
        return _retry(deployment, f"AWS refused a call ({exc}); retrying", level="error")
    except Exception as exc:  # a bug must not wedge the environment: log, back off, retry
        logger.exception("deployment %s: step %s crashed", deployment.pk, deployment.step)
        return _retry(deployment, f"step {deployment.step} failed unexpectedly: {exc!r}")


def _retry(deployment: Deployment, message: str, *, level: str = "warning") -> Transition:
    attempts = deployment.attempts + 1
    wait = min(
        settings.DEPLOYMENT_RETRY_MAX_SECONDS,
        settings.DEPLOYMENT_POLL_SECONDS * (2 ** min(attempts - 1, 10)),
    )
    transition = Transition(updates={"attempts": attempts}, wait=wait)
    if attempts == 1 or attempts % 10 == 0:
        transition.log(message, level)
    return transition


def _apply(deployment: Deployment, token: str, transition: Transition) -> None:
    """Record the step's result and release the claim, atomically."""
    now = timezone.now()
    updates = dict(transition.updates)
    if transition.finish:
        updates.update(status=transition.finish, step=Step.DONE, finished_at=now)
        if transition.finish == Status.SUCCEEDED:
            updates.update(_success_fields(deployment))
    if "attempts" not in updates:
        updates["attempts"] = 0
    updates.update(
        claim_token="",
        claimed_until=None,
        queued_at=None,
        next_step_at=now + dt.timedelta(seconds=transition.wait),
    )
    environment = deployment.environment
    with transaction.atomic():
        released = Deployment.objects.filter(pk=deployment.pk, claim_token=token).update(**updates)
        if not released:
            raise _LostClaim
        for name, value in updates.items():
            setattr(deployment, name, value)
        for level, message in transition.events:
            _event(deployment, message, level=level)
        if transition.pointer_write is not None:
            version, purpose = transition.pointer_write
            source = (
                deployment.pointer
                if purpose == PointerWrite.Purpose.DEPLOY
                else (deployment.previous_pointer or {})
            )
            PointerWrite.objects.update_or_create(
                environment=environment,
                parameter_version=version,
                defaults={
                    "deployment": deployment,
                    "purpose": purpose,
                    "version": str(source.get("version") or ""),
                    "sha256": str(source.get("sha256") or ""),
                    "written_by_name": deployment.requested_by_name,
                },
            )
        if transition.finish == Status.SUCCEEDED:
            Environment.objects.filter(pk=environment.pk).update(
                promoted_version=deployment.to_version
            )
        rollback = None
        if transition.auto_rollback is not None:
            rollback = Deployment.objects.create(**transition.auto_rollback)
            _event(
                rollback,
                f"started automatically to undo #{deployment.pk}: {deployment.error}",
                level="warning",
            )
            notify.deployment_requested(rollback, None)
            transaction.on_commit(lambda: enqueue(rollback.pk))
        if transition.announce:
            notify.deployment_changed(deployment, transition.announce)
        if transition.finish or transition.pointer_write is not None:
            transaction.on_commit(lambda: state_forget(environment.pk))
        if transition.finish:
            notify.deployment_finished(deployment)


def _success_fields(deployment: Deployment) -> dict[str, Any]:
    """What a rollback from this deployment goes back to, once it is live."""
    if deployment.kind == Deployment.Kind.PROMOTE:
        source = (
            Deployment.objects.filter(
                environment_id=deployment.environment_id, status=Status.SUCCEEDED
            )
            .exclude(pk=deployment.pk)
            .order_by("-finished_at", "-id")
            .first()
        )
        previous = deployment.previous_pointer
        if source is not None and not pointer_same_artifact(source.pointer, previous):
            source = None
        if previous is not None and pointer_same_artifact(previous, deployment.pointer):
            # A redeploy of what was live (a drift fix, a repeated promote):
            # rolling it back means going where the one before it went back to,
            # never "from X to X".
            return {
                "rollback_pointer": source.rollback_pointer if source else None,
                "rollback_source": source.rollback_source if source else None,
            }
        return {"rollback_pointer": previous, "rollback_source": source}
    returned = deployment.returns_to
    return {
        "rollback_pointer": returned.rollback_pointer if returned else None,
        "rollback_source": returned.rollback_source if returned else None,
    }


def _event(deployment: Deployment, message: str, *, level: str = "info") -> None:
    DeploymentEvent.objects.create(deployment=deployment, message=message, level=level)
    log = logger.warning if level in {"warning", "error"} else logger.info
    log("deployment %s: %s", deployment.pk, message)


def enqueue(deployment_id: int) -> None:
    """Ask a worker to advance the deployment now (the reconcile beat is the
    safety net when this message is lost)."""
    from dashboard.deployments.tasks import deployment_step

    try:
        deployment_step.delay(deployment_id)
    except Exception:
        logger.warning(
            "could not queue deployment %s (is Redis up?); the reconciler will pick it up",
            deployment_id,
            exc_info=True,
        )


def deployments_reconcile() -> list[int]:
    """Expire stale approval requests and enqueue every deployment whose next
    step is due and that no worker holds. Return the ids enqueued."""
    now = timezone.now()
    _expire_approvals(now)
    grace = dt.timedelta(seconds=max(10.0, 3 * settings.DEPLOYMENT_POLL_SECONDS))
    due = list(
        Deployment.objects.filter(status__in=Deployment.RUNNING)
        .filter(Q(next_step_at__isnull=True) | Q(next_step_at__lte=now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - grace))
        .values_list("pk", flat=True)
    )
    queued = []
    for pk in due:
        # Mark it queued first, so the next tick does not queue it again while
        # this message waits for a free worker.
        marked = (
            Deployment.objects.filter(pk=pk)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - grace))
            .update(queued_at=now)
        )
        if marked:
            enqueue(pk)
            queued.append(pk)
    return queued


def _expire_approvals(now: dt.datetime) -> None:
    for deployment in Deployment.objects.select_related("environment").filter(
        status=Status.AWAITING_APPROVAL, expires_at__lt=now
    ):
        with transaction.atomic():
            expired = Deployment.objects.filter(
                pk=deployment.pk, status=Status.AWAITING_APPROVAL
            ).update(status=Status.EXPIRED, step=Step.DONE, finished_at=now)
            if expired:
                deployment.status, deployment.finished_at = Status.EXPIRED, now
                _event(deployment, "the approval request expired; nothing was changed")
                notify.deployment_finished(deployment)


# --- the steps -------------------------------------------------------------------------------


def _failing(
    deployment: Deployment, error: str, *, outcome: str = Status.FAILED, wait: float = 0.0
) -> Transition:
    """Decide the deployment failed; the restore step makes things consistent."""
    return Transition(
        updates={"outcome": outcome, "error": error, "step": Step.RESTORE}, wait=wait
    ).log(error, "error")


def _aborting(deployment: Deployment, token: str) -> Transition:
    """Someone asked to stop: stop the target's operation where it can, and
    put back what was live (the restore step, or nothing at all before the
    pointer was written)."""
    who = deployment.abort_requested_by_name or "someone"
    error = f"aborted by {who}" + (
        f": {deployment.abort_reason}" if deployment.abort_reason else ""
    )
    if deployment.parameter_version is None:
        transition = Transition(finish=Status.FAILED, updates={"error": error})
        return transition.log(f"{error}; nothing had been changed", "warning")
    if (
        deployment.step == Step.FOLLOW
        and deployment.operation_id
        and deployment.stop_sent_at is None
    ):
        target = target_for(deployment.environment)
        _save(deployment, token, stop_sent_at=timezone.now())
        stopped = target.stop(operation_id=deployment.operation_id)
        transition = Transition(
            updates={"outcome": Status.ROLLED_BACK, "error": error},
            wait=settings.DEPLOYMENT_POLL_SECONDS,
        )
        if stopped:
            return transition.log(
                f"{error}; asked {target.label} to stop {target.operation_label} "
                f"{deployment.operation_id} and roll back",
                "warning",
            )
        return transition.log(
            f"{error}; {target.label} cannot stop {target.operation_label} "
            f"{deployment.operation_id}, so ModelDeck follows it to its end and then puts "
            "back what was live",
            "warning",
        )
    outcome = Status.ROLLED_BACK if deployment.step in (Step.VERIFY, Step.BAKE) else Status.FAILED
    if deployment.step == Step.FOLLOW:
        return Transition(updates={"outcome": outcome, "error": error}).log(error, "warning")
    return _failing(deployment, error, outcome=outcome)


def _step_write_pointer(deployment: Deployment, token: str) -> Transition:
    environment = deployment.environment
    pointer = deployment.pointer
    first = deployment.started_at is None
    now = timezone.now()
    transition = Transition()
    if first:
        transition.updates.update(
            status=Status.IN_PROGRESS,
            started_at=now,
            deadline_at=now + dt.timedelta(seconds=settings.DEPLOYMENT_TIMEOUT_SECONDS),
        )
        transition.announce = "deployment.started"
        transition.log(f"worker started the {deployment.get_kind_display().lower()}")
    # The pinned object must still exist, else no instance could ever load it.
    found = s3.head_object(
        bucket=str(pointer.get("bucket")),
        key=str(pointer.get("key")),
        version_id=str(pointer.get("s3_version_id")),
    )
    if found is None:
        error = (
            f"the artifact of {deployment.to_version} (s3://{pointer.get('bucket')}/"
            f"{pointer.get('key')} version {pointer.get('s3_version_id')}) no longer exists; "
            "nothing was changed"
        )
        transition.updates.update(error=error)
        transition.finish = Status.FAILED
        return transition.log(error, "error")
    if found.size != pointer.get("size"):
        error = (
            f"the artifact of {deployment.to_version} is {found.size} bytes in S3, not the "
            f"{pointer.get('size')} its pointer pins; nothing was changed"
        )
        transition.updates.update(error=error)
        transition.finish = Status.FAILED
        return transition.log(error, "error")
    document = pointer_dumps(pointer)
    current = ssm.get_parameter_version(name=environment.ssm_parameter)
    if current is not None and current.value == document:
        version = current.version
        transition.log(
            f"SSM {environment.ssm_parameter} already holds this pointer (version {version})"
        )
        if deployment.previous_pointer is None and version > 1:
            before = ssm.get_parameter_version(name=environment.ssm_parameter, version=version - 1)
            transition.updates["previous_pointer"] = pointer_loads(before.value) if before else None
    else:
        if deployment.previous_pointer is None and current is not None:
            transition.updates["previous_pointer"] = pointer_loads(current.value)
        version = ssm.put_parameter(
            name=environment.ssm_parameter,
            value=document,
            description=f"{environment}: {deployment.to_version} by deployment #{deployment.pk}",
        )
        transition.log(
            f"wrote the pointer to {deployment.to_version} as SSM "
            f"{environment.ssm_parameter} version {version}"
        )
    transition.updates.update(parameter_version=version, step=Step.START)
    transition.pointer_write = (version, PointerWrite.Purpose.DEPLOY)
    return transition


def _step_start(deployment: Deployment, token: str) -> Transition:
    environment = deployment.environment
    target = target_for(environment)
    pin = f"{environment.ssm_parameter}:{deployment.parameter_version}"
    now = timezone.now()
    revision = target.describe()
    transition = Transition()
    if not deployment.previous_pin and revision.pin and revision.pin != pin:
        _adopt_running_revision(deployment, token, revision.pin, transition)
    since = deployment.start_requested_at or deployment.started_at or now
    if deployment.start_requested_at or revision.pin == pin:
        # An earlier try of this step may have asked already: never ask twice.
        operation_id = target.find_started(since=since - START_SKEW)
        if operation_id:
            transition.log(f"following {target.operation_label} {operation_id} started earlier")
            return _following(transition, operation_id)
    if revision.pin == pin and not revision.busy:
        transition.log(f"the service already runs the revision pinned to {pin}")
        return _verifying(deployment, transition)
    if revision.busy:
        return _busy(deployment, transition, target)
    _save(deployment, token, start_requested_at=now)
    try:
        operation_id = target.start(pin=pin)
    except TargetBusy:
        return _busy(deployment, transition, target)
    except TargetError as exc:
        failing = _failing(deployment, str(exc))
        failing.events[:0] = transition.events
        return failing
    transition.log(f"{target.operation_label} {operation_id} started: a revision pinned to {pin}")
    return _following(transition, operation_id)


def _adopt_running_revision(
    deployment: Deployment, token: str, running_pin: str, transition: Transition
) -> None:
    """Remember which pointer version the service ran before: restoring means
    going back to exactly that."""
    name, version = pin_parse(running_pin)
    updates: dict[str, Any] = {"previous_pin": running_pin}
    if version is not None:
        found = ssm.get_parameter_version(name=name, version=version)
        pinned = pointer_loads(found.value) if found else None
        if pinned is not None:
            updates["previous_pointer"] = pinned
            updates["from_version"] = str(pinned.get("version") or "")
    _save(deployment, token, **updates)
    transition.log(f"the service ran the revision pinned to {running_pin}")


def _busy(deployment: Deployment, transition: Transition, target: DeployTarget) -> Transition:
    if _past_deadline(deployment):
        return _failing(
            deployment,
            f"the service stayed busy with another operation past the deployment's "
            f"{settings.DEPLOYMENT_TIMEOUT_SECONDS} s timeout",
        )
    if deployment.operation_status != "BUSY":
        transition.log("the service is busy with another operation; waiting for it to end")
        transition.updates["operation_status"] = "BUSY"
    transition.wait = settings.DEPLOYMENT_POLL_SECONDS
    return transition


def _following(transition: Transition, operation_id: str) -> Transition:
    transition.updates.update(operation_id=operation_id, step=Step.FOLLOW, operation_status="")
    transition.wait = settings.DEPLOYMENT_POLL_SECONDS
    return transition


def _verifying(deployment: Deployment, transition: Transition) -> Transition:
    now = timezone.now()
    transition.updates.update(
        status=Status.VERIFYING,
        step=Step.VERIFY,
        live_at=deployment.live_at or now,
        verify_until=now + dt.timedelta(seconds=settings.DEPLOYMENT_VERIFY_SECONDS),
    )
    return transition


def _past_deadline(deployment: Deployment) -> bool:
    deadline = deployment.deadline_at or deployment.created_at + dt.timedelta(
        seconds=settings.DEPLOYMENT_TIMEOUT_SECONDS
    )
    return timezone.now() >= deadline


def _step_follow(deployment: Deployment, token: str) -> Transition:
    target = target_for(deployment.environment)
    state = target.poll(operation_id=deployment.operation_id)
    transition = Transition(wait=settings.DEPLOYMENT_POLL_SECONDS)
    if state is None:
        revision = target.describe()
        pin = f"{deployment.environment.ssm_parameter}:{deployment.parameter_version}"
        if revision.pin == pin and not revision.busy:
            transition.log(
                f"{target.operation_label} {deployment.operation_id} is no longer listed; "
                "the service runs the pinned revision"
            )
            return (
                _verifying(deployment, transition)
                if not deployment.outcome
                else _restoring(transition)
            )
        if _past_deadline(deployment):
            return _failing(
                deployment, f"{target.operation_label} {deployment.operation_id} is not listed"
            )
        return transition
    if state.status != deployment.operation_status:
        transition.log(f"{target.operation_label} is {state.status}")
        transition.updates["operation_status"] = state.status
    if state.detail:
        stage = state.detail.get("stage_label")
        if stage and stage != (deployment.operation_detail or {}).get("stage_label"):
            transition.log(f"{target.label}: {stage}")
        if state.detail != deployment.operation_detail:
            transition.updates["operation_detail"] = state.detail
    why = str(state.detail.get("reason") or "")
    if state.phase == Phase.RUNNING:
        if _past_deadline(deployment) and not deployment.outcome:
            error = (
                f"timed out after {settings.DEPLOYMENT_TIMEOUT_SECONDS} s; "
                f"{target.operation_label} {deployment.operation_id} goes on, so ModelDeck "
                "follows it to its end and then puts back what was live"
            )
            transition.updates.update(outcome=Status.FAILED, error=error)
            transition.log(error, "error")
        return transition
    transition.wait = 0
    if deployment.outcome:  # timed out earlier: whatever happened, undo it
        return _restoring(transition)
    if state.phase == Phase.SUCCEEDED:
        if state.ended_at is not None:
            transition.updates["live_at"] = state.ended_at
        return _verifying(deployment, transition)
    if state.phase == Phase.ROLLED_BACK:
        error = (
            f"{target.label} rolled back to the previous revision: {why}"
            if why
            else f"the new revision with {deployment.to_version} never became healthy; "
            f"{target.label} rolled back to the previous revision"
        )
        transition.updates.update(outcome=Status.ROLLED_BACK, error=error)
        transition.log(error, "error")
        return _restoring(transition)
    error = f"{target.operation_label} ended {state.status}" + (f": {why}" if why else "")
    transition.updates.update(outcome=Status.FAILED, error=error)
    transition.log(error, "error")
    return _restoring(transition)


def _restoring(transition: Transition) -> Transition:
    transition.updates["step"] = Step.RESTORE
    transition.wait = 0
    return transition


def _service_url(deployment: Deployment) -> str:
    environment = deployment.environment
    if environment.service_url:
        return environment.service_url.rstrip("/")
    return target_for(environment).describe().url


def _step_verify(deployment: Deployment, token: str) -> Transition:
    live = live_version(base_url=_service_url(deployment))
    transition = Transition(wait=settings.DEPLOYMENT_VERIFY_POLL_SECONDS)
    if live.sha256 == deployment.sha256 and live.version == deployment.to_version:
        transition.updates.update(live_version=live.version, live_sha256=live.sha256)
        transition.log(f"verified: the service serves {live.version} (SHA-256 {live.sha256[:12]}…)")
        # Only promotions bake: a rollback returns to a version that served
        # before, and the alarms the bad one set off take minutes to clear.
        minutes = (
            bake.bake_minutes(environment=deployment.environment)
            if deployment.kind == Deployment.Kind.PROMOTE
            else 0
        )
        if minutes > 0:
            transition.updates.update(
                status=Status.BAKING,
                step=Step.BAKE,
                bake_until=timezone.now() + dt.timedelta(minutes=minutes),
            )
            transition.log(f"baking for {minutes} min: a firing alarm rolls it back")
            transition.wait = 0
            return transition
        transition.finish = Status.SUCCEEDED
        return transition
    observed = _describe_live(live)
    if deployment.live_sha256 != (live.sha256 or "") or not deployment.live_sha256:
        transition.updates.update(live_version=live.version or "", live_sha256=live.sha256 or "")
        if deployment.attempts == 0:
            transition.log(f"waiting for the service to report {deployment.to_version}: {observed}")
    transition.updates["attempts"] = deployment.attempts + 1
    if deployment.verify_until is not None and timezone.now() >= deployment.verify_until:
        return _failing(
            deployment,
            f"verification failed: the service should serve {deployment.to_version} "
            f"(SHA-256 {deployment.sha256[:12]}…) but {observed}",
        )
    return transition


def _describe_live(live: LiveVersion) -> str:
    if live.sha256 is None:
        return f"it does not answer ({live.error or 'no SHA-256 reported'})"
    return f"it reports {live.version} (SHA-256 {live.sha256[:12]}…)"


def _step_bake(deployment: Deployment, token: str) -> Transition:
    try:
        firing = bake.alarms_firing(environment=deployment.environment)
    except AwsError as exc:
        # Unknown is not ALARM: a CloudWatch outage must not roll back a good
        # version. Look again; the window still ends on time.
        transition = _bake_ends(deployment) or Transition(wait=settings.DEPLOYMENT_POLL_SECONDS)
        if deployment.operation_status != "ALARMS_UNKNOWN":
            transition.updates["operation_status"] = "ALARMS_UNKNOWN"
            transition.log(f"could not read the alarms ({exc}); looking again", "warning")
        return transition
    if firing:
        names = ", ".join(a.name for a in firing)
        return _failing(
            deployment,
            f"alarm {names} went into ALARM during the bake window"
            + (f": {firing[0].reason}" if firing[0].reason else ""),
            outcome=Status.ROLLED_BACK,
        )
    return _bake_ends(deployment, quiet=True) or Transition(wait=settings.DEPLOYMENT_POLL_SECONDS)


def _bake_ends(deployment: Deployment, *, quiet: bool = False) -> Transition | None:
    if deployment.bake_until is not None and timezone.now() < deployment.bake_until:
        return None
    transition = Transition(finish=Status.SUCCEEDED)
    if quiet:
        return transition.log("the bake window passed with every alarm quiet")
    return transition.log("the bake window passed (the alarms could not be read at its end)")


def _step_restore(deployment: Deployment, token: str) -> Transition:
    """Make SSM name what the service serves, and the service serve a
    known-good version: then finish with the decided outcome."""
    outcome = deployment.outcome or Status.FAILED
    previous = deployment.previous_pointer
    if deployment.parameter_version is None and not deployment.operation_id:
        transition = Transition(finish=outcome)
        return transition.log("nothing was changed: the pointer was never written")
    live = live_version(base_url=_service_url(deployment))
    serving_previous = previous is not None and live.sha256 == str(previous.get("sha256"))
    if live.sha256 is None:
        # Unreachable: decide from what the target runs, once the wait is over.
        window = dt.timedelta(seconds=settings.DEPLOYMENT_VERIFY_SECONDS)
        revision = target_for(deployment.environment).describe()
        pin = f"{deployment.environment.ssm_parameter}:{deployment.parameter_version}"
        if revision.busy:
            return Transition(wait=settings.DEPLOYMENT_POLL_SECONDS)
        if deployment.attempts * settings.DEPLOYMENT_VERIFY_POLL_SECONDS < window.total_seconds():
            transition = Transition(
                updates={"attempts": deployment.attempts + 1},
                wait=settings.DEPLOYMENT_VERIFY_POLL_SECONDS,
            )
            if deployment.attempts == 0:
                transition.log(f"the service does not answer ({live.error}); asking again")
            return transition
        serving_previous = revision.pin != pin and previous is not None
    if serving_previous or not previous or deployment.kind == Deployment.Kind.AUTO_ROLLBACK:
        return _restore_pointer(deployment, outcome, live, serving_previous)
    # The service runs something that is not the previous good version: undo it.
    return _start_auto_rollback(deployment, live)


def _restore_pointer(
    deployment: Deployment, outcome: str, live: LiveVersion, serving_previous: bool
) -> Transition:
    environment = deployment.environment
    previous = deployment.previous_pointer
    transition = Transition(finish=outcome, updates={"alert": ""})
    if live.sha256:
        transition.updates.update(live_version=live.version or "", live_sha256=live.sha256)
    if not serving_previous or previous is None:
        if deployment.kind == Deployment.Kind.AUTO_ROLLBACK and not serving_previous:
            transition.updates["alert"] = (
                f"the automatic rollback did not bring back {deployment.to_version}: "
                + (_describe_live(live))
                + "; promote a known-good version"
            )
        transition.log(
            "left the pointer as it is: "
            + ("there is no earlier pointer" if previous is None else _describe_live(live)),
            "warning",
        )
        return transition
    if deployment.parameter_version is None:
        transition.log("the pointer was never changed; nothing to restore")
        return transition
    current = ssm.get_parameter_version(name=environment.ssm_parameter)
    current_pointer = pointer_loads(current.value) if current else None
    if current is not None and pointer_same_artifact(current_pointer, previous):
        transition.log(f"the pointer already names {previous.get('version')}")
        return transition
    if current is not None and not pointer_same_artifact(current_pointer, deployment.pointer):
        transition.log(
            f"the pointer was changed by someone else meanwhile (SSM version {current.version}); "
            "left as it is",
            "warning",
        )
        return transition
    try:
        version = ssm.put_parameter(
            name=environment.ssm_parameter,
            value=pointer_dumps(previous),
            description=f"{environment}: restored {previous.get('version')} after "
            f"deployment #{deployment.pk}",
        )
    except AwsError as exc:
        alert = (
            f"SSM refused to restore the pointer to {previous.get('version')}: {exc}. "
            f"It still names {deployment.to_version}, which the service does not serve; "
            "retrying (the environment stays locked until it succeeds)"
        )
        retry = _retry(deployment, alert, level="error")
        retry.updates["alert"] = alert
        return retry
    transition.pointer_write = (version, PointerWrite.Purpose.RESTORE)
    transition.log(f"restored the pointer to {previous.get('version')} (SSM version {version})")
    return transition


def _start_auto_rollback(deployment: Deployment, live: LiveVersion) -> Transition:
    previous = deployment.previous_pointer or {}
    environment = deployment.environment
    returns_to = (
        Deployment.objects.filter(environment=environment, status=Status.SUCCEEDED)
        .exclude(pk=deployment.pk)
        .order_by("-finished_at", "-id")
        .first()
    )
    if returns_to is not None and not pointer_same_artifact(returns_to.pointer, previous):
        returns_to = None
    now = timezone.now()
    reason = f"auto-rollback of #{deployment.pk}: {deployment.error}"[:500]
    # Its change is being undone: whatever went wrong, it ends rolled back.
    transition = Transition(finish=Status.ROLLED_BACK)
    transition.updates.update(live_version=live.version or "", live_sha256=live.sha256 or "")
    transition.auto_rollback = {
        "environment": environment,
        "kind": Deployment.Kind.AUTO_ROLLBACK,
        "status": Status.PENDING,
        "step": Step.WRITE_POINTER,
        "from_version": deployment.to_version,
        "to_version": str(previous.get("version") or ""),
        "pointer": pointer_restamp(previous, promoted_by="modeldeck", reason=reason, now=now),
        "previous_pointer": deployment.pointer,
        "requested_by_name": "modeldeck",
        "reason": reason,
        "undoes": deployment,
        "returns_to": returns_to,
        "next_step_at": now,
        "queued_at": now,
    }
    transition.log(
        f"the service does not serve the previous good version {previous.get('version')} "
        f"({_describe_live(live)}): rolling back to it automatically",
        "error",
    )
    return transition


_STEPS: dict[str, Callable[[Deployment, str], Transition]] = {
    Step.WRITE_POINTER: _step_write_pointer,
    Step.START: _step_start,
    Step.FOLLOW: _step_follow,
    Step.VERIFY: _step_verify,
    Step.BAKE: _step_bake,
    Step.RESTORE: _step_restore,
}
