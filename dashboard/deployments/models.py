from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Environment(models.Model):
    """Where one model is served: an SSM pointer plus the App Runner service
    that reads it at startup. One row per (model, environment name)."""

    model_name = models.CharField(max_length=63)
    name = models.CharField(max_length=32)
    ssm_parameter = models.CharField(
        max_length=2048, help_text="Name of the SSM String parameter holding the pointer."
    )
    service_arn = models.CharField(max_length=1011, help_text="App Runner service ARN.")
    service_url = models.URLField(
        blank=True,
        help_text="Base URL of the service; empty means https:// + App Runner's ServiceUrl.",
    )
    requires_admin = models.BooleanField(
        default=False, help_text="Only admins may promote to or roll back this environment."
    )
    position = models.PositiveSmallIntegerField(default=0)
    promoted_version = models.CharField(
        max_length=64,
        blank=True,
        help_text="The pointer's version as last written or read (SSM is authoritative).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_name", "position", "name"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "name"], name="environment_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}/{self.name}"


class Deployment(models.Model):
    """One change of what an environment serves, followed to its end.

    The row is the job's state (not Celery's result backend): the worker
    advances it and the pages read it.
    """

    class Kind(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"
        AUTO_ROLLBACK = "auto_rollback"

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_PROGRESS = "in_progress"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ROLLED_BACK = "rolled_back"

    IN_FLIGHT = (Status.PENDING, Status.IN_PROGRESS)
    FINAL = (Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK)

    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="deployments"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PROMOTE)
    from_version = models.CharField(max_length=64, blank=True)
    to_version = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    operation_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    reason = models.CharField(max_length=500, blank=True)
    pointer = models.JSONField(help_text="The pointer this deployment wrote to SSM.")
    previous_pointer = models.JSONField(
        null=True, blank=True, help_text="The pointer before it, restored if the deployment fails."
    )
    live_version = models.CharField(
        max_length=64, blank=True, help_text="What the service's /version reported at the end."
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    runner = models.CharField(
        max_length=32,
        blank=True,
        help_text="Lease of the worker running it; a worker that loses it stops.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one deployment in flight per environment, enforced by the
            # database so two concurrent promotes cannot both start.
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(status__in=["pending", "in_progress"]),
                name="deployment_one_in_flight_per_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.environment} -> {self.to_version} ({self.status})"

    @property
    def in_flight(self) -> bool:
        return self.status in self.IN_FLIGHT


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
