from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """One state-changing action: who did what, to which model, environment,
    version or object, when, why, and how it ended.

    Rows are only ever added (never updated or deleted by the dashboard).
    Everything is copied as plain values rather than foreign keys, so the
    history outlives the things it talks about: a deleted user keeps their
    username here (``actor_name``), a deleted version or environment keeps its
    name, and a deployment keeps its id.
    """

    class Action(models.TextChoices):
        PROMOTE = "promote", "promote requested"
        APPROVE = "approve", "deployment approved"
        REJECT = "reject", "deployment rejected"
        ROLLBACK = "rollback", "rollback requested"
        ABORT = "abort", "deployment stopped"
        AUTO_ROLLBACK = "auto_rollback", "automatic rollback"
        DEPLOYMENT_FINISHED = "deployment_finished", "deployment finished"
        VERSION_UPLOAD = "version_upload", "version uploaded"
        VERSION_DELETE = "version_delete", "version deleted"
        ENVIRONMENT_RULES = "environment_rules", "environment rules changed"
        POINTER_EXTERNAL = "pointer_external", "pointer changed outside the dashboard"
        POINTER_RESTORE = "pointer_restore", "pointer restored"
        WEBHOOK_CREATE = "webhook_create", "webhook added"
        WEBHOOK_UPDATE = "webhook_update", "webhook changed"
        WEBHOOK_DELETE = "webhook_delete", "webhook removed"
        WEBHOOK_ROTATE = "webhook_rotate", "webhook secret rotated"
        TOKEN_CREATE = "token_create", "API token created"
        TOKEN_REVOKE = "token_revoke", "API token revoked"

    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty for the system, or once the user is deleted (actor_name remains).",
    )
    actor_name = models.CharField(
        max_length=255, help_text="Username at the time, 'system', or who AWS says it was."
    )
    action = models.CharField(max_length=32, choices=Action.choices)
    model_name = models.CharField(max_length=63, blank=True)
    environment_name = models.CharField(max_length=32, blank=True)
    version = models.CharField(max_length=64, blank=True)
    # A plain id rather than a foreign key: deployments are never deleted, and
    # the history must not depend on them staying so.
    deployment_id = models.BigIntegerField(null=True, blank=True)
    object_type = models.CharField(max_length=32, blank=True, help_text="e.g. webhook, api_token")
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    result = models.CharField(max_length=32, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["-at", "-id"], name="audit_newest"),
            models.Index(
                fields=["model_name", "environment_name", "-at"], name="audit_model_environment"
            ),
            models.Index(fields=["action", "-at"], name="audit_action"),
            models.Index(fields=["actor_name", "-at"], name="audit_actor"),
            models.Index(fields=["deployment_id"], name="audit_deployment"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"

    @property
    def where(self) -> str:
        return "/".join(p for p in (self.model_name, self.environment_name) if p)

    @property
    def detail_items(self) -> list[tuple[str, str]]:
        """The detail as (label, text) lines for a page: a change reads
        "old → new", a list "a, b", anything else as JSON."""
        lines: list[tuple[str, str]] = []
        for key, value in (self.detail or {}).items():
            if key == "changed" and isinstance(value, dict):
                lines.extend((f"{field}", _text(change)) for field, change in value.items())
            else:
                lines.append((key, _text(value)))
        return lines


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "none"
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        return f"{_text(value['from'])} → {_text(value['to'])}"
    return json.dumps(value, sort_keys=True)
