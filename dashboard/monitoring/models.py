from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from dashboard.deployments.models import Environment

# Deliberately 5xx and latency only: a 4xx alarm would let a client that sends
# bad payloads roll back a good model during its bake window.
DEFAULT_ERROR_RATE_PERCENT = 5.0
DEFAULT_P99_LATENCY_MS = 2000


class MonitoringSettings(models.Model):
    """How an environment is watched: its CloudWatch alarms and the bake window.

    Edited by admins on the environment's monitoring page; saving creates,
    updates or deletes the alarms in CloudWatch (``alarm_names`` lists the ones
    that exist). The deployment reconciler reads ``bake_minutes`` and the alarm
    states through ``dashboard.monitoring.selectors``.
    """

    environment = models.OneToOneField(
        Environment, on_delete=models.CASCADE, related_name="monitoring_settings"
    )
    alarms_enabled = models.BooleanField(
        default=False, help_text="Create CloudWatch alarms for this environment's service."
    )
    bake_minutes = models.PositiveSmallIntegerField(
        default=10,
        validators=[MaxValueValidator(24 * 60)],
        help_text="After a deployment goes live, roll it back if an alarm fires within "
        "this many minutes (0: no bake window). Needs alarms.",
    )
    error_rate_enabled = models.BooleanField(default=True)
    error_rate_percent = models.FloatField(
        default=DEFAULT_ERROR_RATE_PERCENT,
        validators=[MinValueValidator(0.01), MaxValueValidator(100.0)],
        help_text="Alarm when 5xx responses exceed this share of requests in a minute.",
    )
    error_rate_min_requests = models.PositiveIntegerField(
        default=10,
        help_text="Minutes with fewer requests than this never count as breaching "
        "(one failed request out of two is not an outage).",
    )
    latency_enabled = models.BooleanField(default=True)
    latency_p99_ms = models.PositiveIntegerField(
        default=DEFAULT_P99_LATENCY_MS,
        validators=[MinValueValidator(1), MaxValueValidator(120_000)],
        help_text="Alarm when the p99 request latency of a minute exceeds this.",
    )
    evaluation_minutes = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="Minutes CloudWatch looks at for each evaluation.",
    )
    datapoints_to_alarm = models.PositiveSmallIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="How many of those minutes must breach (at most evaluation minutes).",
    )
    inference_dimensions = models.JSONField(
        default=dict,
        blank=True,
        help_text="The inference service's EMF_DIMENSIONS for this environment (Model and "
        'Version are always added); empty means {"Environment": "<environment name>"} '
        "(INFERENCE_METRICS_ENVIRONMENT_DIMENSION).",
    )
    alarm_names = models.JSONField(
        default=list, blank=True, help_text="The CloudWatch alarms this dashboard created."
    )
    alarms_synced_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "monitoring settings"

    def __str__(self) -> str:
        return f"monitoring of {self.environment}"
