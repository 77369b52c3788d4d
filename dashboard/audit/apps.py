from django.apps import AppConfig


class AuditConfig(AppConfig):
    """One history of every state-changing action, and the deployments list API."""

    name = "dashboard.audit"
    label = "audit"
