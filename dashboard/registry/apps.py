from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """Model versions: what lives in S3 under models/<model>/<version>/."""

    name = "dashboard.registry"
    label = "registry"
