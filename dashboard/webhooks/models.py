from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Webhook(models.Model):
    """A receiver of an environment's deployment events (CONTRACT.md section 4).

    The secret is stored as it is, not hashed: signing a body with HMAC needs
    the secret itself, exactly as every webhook sender (GitHub, Stripe) keeps
    it. It is shown once, when created or rotated, and never again; anyone who
    can read this table can forge deliveries, so the database is to be
    protected like the signing key it holds.
    """

    environment = models.ForeignKey(
        "deployments.Environment", on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event names this webhook receives.")
    active = models.BooleanField(default=True)
    secret = models.CharField(max_length=128)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["environment", "id"]

    def __str__(self) -> str:
        return f"webhook #{self.pk} {self.url}"

    @property
    def secret_hint(self) -> str:
        """Enough to recognise the secret, not to use it."""
        return self.secret[:10] + "…"


class WebhookDelivery(models.Model):
    """One event to send to one webhook, and where it is on its way.

    A small state machine in the database: ``pending`` (due at
    ``next_attempt_at``) -> ``sending`` (claimed by one worker until
    ``claimed_until``) -> ``succeeded``, or back to ``pending`` with a later
    ``next_attempt_at``, or ``failed`` after the last attempt. The body is
    fixed when the event happens, so every attempt sends the same bytes with
    the same signature and the same ``delivery_id`` (receivers dedupe on it).
    """

    class State(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=40)
    body = models.TextField(help_text="The exact JSON sent (and signed) on every attempt.")
    deployment = models.ForeignKey(
        "deployments.Deployment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(
        max_length=32, blank=True, help_text="Token of the worker sending it right now."
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The dispatcher's scan: only rows still on their way are indexed.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(state__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.delivery_id} ({self.state})"

    @property
    def done(self) -> bool:
        return self.state in {self.State.SUCCEEDED, self.State.FAILED}


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, as it went: the delivery log."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number", "id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
