from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Environment(models.Model):
    """Where one model is served: an SSM pointer plus the service (a deploy
    target: App Runner or ECS) whose revisions pin a version of that pointer.
    One row per (model, environment name). Its rules say who may change it."""

    class Target(models.TextChoices):
        APPRUNNER = "apprunner", "AWS App Runner"
        ECS_EXPRESS = "ecs_express", "Amazon ECS Express Mode"
        ECS = "ecs", "Amazon ECS service"

    class PromoteRole(models.TextChoices):
        DEPLOYER = "deployer"
        ADMIN = "admin"

    model_name = models.CharField(max_length=63)
    name = models.CharField(max_length=32)
    ssm_parameter = models.CharField(
        max_length=2048, help_text="Name of the SSM String parameter holding the pointer."
    )
    target = models.CharField(
        max_length=16,
        choices=Target.choices,
        default=Target.APPRUNNER,
        help_text="What runs the inference service.",
    )
    service_arn = models.CharField(
        max_length=1011, help_text="ARN of the App Runner or ECS service."
    )
    service_url = models.URLField(
        blank=True,
        help_text="Base URL of the service; empty means the URL the target reports.",
    )
    position = models.PositiveSmallIntegerField(default=0)
    promoted_version = models.CharField(
        max_length=64,
        blank=True,
        help_text="The version the dashboard last made live (its own record; SSM and the "
        "service are compared with it to find drift).",
    )
    # --- rules (edited by admins on the environment's settings page) ---------
    promote_role = models.CharField(
        max_length=16,
        choices=PromoteRole.choices,
        default=PromoteRole.DEPLOYER,
        help_text="The least role that may promote to, roll back or approve for this environment.",
    )
    requires_approval = models.BooleanField(
        default=False,
        help_text="A promotion waits until a second person with the promote role approves it.",
    )
    approval_expiry_hours = models.PositiveIntegerField(
        default=24, help_text="A promotion not approved within this time expires."
    )
    requires_reason = models.BooleanField(
        default=False, help_text="A promotion must say why (rollbacks always must)."
    )
    frozen = models.BooleanField(
        default=False, help_text="Deploy freeze: promotions are refused; rollbacks still work."
    )
    freeze_reason = models.CharField(max_length=500, blank=True)
    # --- what the pointer watcher has seen -------------------------------------
    pointer_version_seen = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The newest SSM parameter version the watcher has looked at.",
    )
    drift_reported = models.CharField(
        max_length=300,
        blank=True,
        help_text="The drift last announced (drift.detected), so each is announced once.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_name", "position", "name"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "name"], name="environment_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}/{self.name}"

    @property
    def requires_admin(self) -> bool:
        return self.promote_role == self.PromoteRole.ADMIN


class Deployment(models.Model):
    """One change of what an environment serves, as a state machine.

    The row is the whole truth of the deployment: ``step`` says what to do
    next, ``next_step_at`` when; a worker claims the row (``claim_token`` until
    ``claimed_until``), takes one short step, records its result and releases
    it. No worker holds a deployment for longer than one step, so a killed
    worker delays it by at most the lease, and the next step re-reads AWS.
    """

    class Kind(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"
        AUTO_ROLLBACK = "auto_rollback"

    class Status(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval"
        PENDING = "pending"
        IN_PROGRESS = "in_progress"
        VERIFYING = "verifying"
        BAKING = "baking"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ROLLED_BACK = "rolled_back"
        REJECTED = "rejected"
        EXPIRED = "expired"

    class Step(models.TextChoices):
        APPROVAL = "approval"  # waiting for a second person
        WRITE_POINTER = "write_pointer"  # PutParameter: the new pointer version
        START = "start"  # ask the target to run a revision pinned to that version
        FOLLOW = "follow"  # poll the target's operation once
        VERIFY = "verify"  # the service must report the pointer's SHA-256
        BAKE = "bake"  # watch the environment's alarms
        RESTORE = "restore"  # a failure: make SSM name what is live, then finish
        DONE = "done"

    IN_FLIGHT = (
        Status.AWAITING_APPROVAL,
        Status.PENDING,
        Status.IN_PROGRESS,
        Status.VERIFYING,
        Status.BAKING,
    )
    # In flight and the reconciler's to advance (approval waits for a person).
    RUNNING = (Status.PENDING, Status.IN_PROGRESS, Status.VERIFYING, Status.BAKING)
    FINAL = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.ROLLED_BACK,
        Status.REJECTED,
        Status.EXPIRED,
    )

    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="deployments"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PROMOTE)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.WRITE_POINTER)
    outcome = models.CharField(
        max_length=20,
        blank=True,
        help_text="The final status decided while the deployment still restores consistency.",
    )
    from_version = models.CharField(max_length=64, blank=True)
    to_version = models.CharField(max_length=64)
    pointer = models.JSONField(help_text="The exact pointer this deployment makes live.")
    previous_pointer = models.JSONField(
        null=True,
        blank=True,
        help_text="The pointer the service ran before (its pinned revision), restored on failure.",
    )
    previous_pin = models.CharField(
        max_length=2100,
        blank=True,
        help_text="MODEL_SSM_PARAMETER of the service's revision before this deployment.",
    )
    parameter_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="The SSM parameter version holding ``pointer``."
    )
    # --- the target's operation ------------------------------------------------
    operation_id = models.CharField(max_length=200, blank=True)
    operation_status = models.CharField(max_length=40, blank=True)
    operation_detail = models.JSONField(
        null=True, blank=True, help_text="What the target last reported (e.g. canary traffic)."
    )
    start_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set just before the target is asked to deploy: a retry first looks for "
        "an operation started since, so the request is never sent twice.",
    )
    # --- people ------------------------------------------------------------------
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    requested_by_name = models.CharField(max_length=150, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_by_name = models.CharField(max_length=150, blank=True)
    decision_reason = models.CharField(max_length=500, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    # --- results -------------------------------------------------------------------
    live_version = models.CharField(max_length=64, blank=True)
    live_sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    alert = models.TextField(
        blank=True,
        help_text="A problem that needs attention while the deployment holds the environment "
        "(e.g. SSM refuses the pointer restore).",
    )
    # --- what a rollback from this deployment goes back to ---------------------------
    rollback_pointer = models.JSONField(
        null=True,
        blank=True,
        help_text="Once live: the exact pointer a rollback redeploys.",
    )
    rollback_source = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The deployment that made rollback_pointer live, if any.",
    )
    undoes = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="undone_by",
        help_text="For a rollback: the deployment it undoes.",
    )
    returns_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="For a rollback: the deployment whose pointer it redeploys, if any.",
    )
    # --- time ------------------------------------------------------------------------
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    live_at = models.DateTimeField(
        null=True, blank=True, help_text="When the new revision took the traffic."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Approval deadline.")
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="The target operation must end by then."
    )
    verify_until = models.DateTimeField(null=True, blank=True)
    bake_until = models.DateTimeField(null=True, blank=True)
    # --- a person stopping it -----------------------------------------------------------
    abort_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="Someone asked to stop it and put back what was live."
    )
    abort_requested_by_name = models.CharField(max_length=150, blank=True)
    abort_reason = models.CharField(max_length=500, blank=True)
    stop_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the target was asked to stop its operation."
    )
    # --- the reconciler's bookkeeping ----------------------------------------------------
    next_step_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed tries of the current step (backoff)."
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one deployment in flight per environment, enforced by the
            # database so two concurrent promotes cannot both start.
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(
                    status__in=[
                        "awaiting_approval",
                        "pending",
                        "in_progress",
                        "verifying",
                        "baking",
                    ]
                ),
                name="deployment_one_in_flight_per_environment",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_step_at"], name="deployment_due"),
            models.Index(fields=["environment", "-created_at"], name="deployment_env_newest"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.environment} -> {self.to_version} ({self.status})"

    @property
    def in_flight(self) -> bool:
        return self.status in self.IN_FLIGHT

    @property
    def sha256(self) -> str:
        return str((self.pointer or {}).get("sha256") or "")

    @property
    def previous_sha256(self) -> str:
        return str((self.previous_pointer or {}).get("sha256") or "")


class DeploymentEvent(models.Model):
    """A line of a deployment's log, shown live on its page."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return self.message


class PointerWrite(models.Model):
    """An SSM parameter version the dashboard wrote. Every version of a
    pointer's SSM history without one of these was written by someone else."""

    class Purpose(models.TextChoices):
        DEPLOY = "deploy"
        RESTORE = "restore"
        INITIAL = "initial"

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="pointer_writes"
    )
    parameter_version = models.PositiveIntegerField()
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    version = models.CharField(max_length=64, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    written_by_name = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-parameter_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "parameter_version"], name="pointer_write_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment} v{self.parameter_version} ({self.purpose})"


class PointerChange(models.Model):
    """A change of the pointer made outside the dashboard, as the watcher
    found it in SSM's history: recorded, shown, never silently adopted."""

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="pointer_changes"
    )
    parameter_version = models.PositiveIntegerField()
    version = models.CharField(max_length=64, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    modified_by = models.CharField(max_length=2048, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    found_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-parameter_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "parameter_version"], name="pointer_change_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment} v{self.parameter_version} changed outside the dashboard"
