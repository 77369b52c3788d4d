from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Metrics, logs and alarms of each environment's App Runner service."""

    name = "dashboard.monitoring"
    label = "monitoring"
