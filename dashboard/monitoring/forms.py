"""The monitoring settings form (admins) and the query strings of the pages."""

from __future__ import annotations

import datetime as dt

from django import forms

from dashboard.monitoring.models import MonitoringSettings
from dashboard.monitoring.services import EDITABLE_FIELDS


class MonitoringSettingsForm(forms.ModelForm):
    class Meta:
        model = MonitoringSettings
        fields = list(EDITABLE_FIELDS)
        labels = {
            "alarms_enabled": "Create CloudWatch alarms",
            "bake_minutes": "Bake window (minutes)",
            "error_rate_enabled": "5xx error-rate alarm",
            "error_rate_percent": "5xx rate threshold (%)",
            "error_rate_min_requests": "Minimum requests per minute",
            "latency_enabled": "p99 latency alarm",
            "latency_p99_ms": "p99 latency threshold (ms)",
            "evaluation_minutes": "Evaluation window (minutes)",
            "datapoints_to_alarm": "Breaching minutes to alarm",
            "inference_dimensions": "Inference metric dimensions (JSON)",
        }
        widgets = {"inference_dimensions": forms.Textarea(attrs={"rows": 2})}

    def clean_inference_dimensions(self) -> object:
        value = self.cleaned_data.get("inference_dimensions")
        return value if value not in (None, "") else {}


def parse_instant(raw: str, name: str) -> dt.datetime:
    """An ISO 8601 instant; one without a zone is UTC. Raises ValueError naming ``name``."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"{name} must be an ISO 8601 time such as 2026-11-24T03:00:00Z, not {raw[:40]!r}"
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
