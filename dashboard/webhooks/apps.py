from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Outgoing, signed webhooks per environment, delivered with retries."""

    name = "dashboard.webhooks"
    label = "webhooks"
