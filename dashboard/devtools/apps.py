from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Commands for the local stack: seeding the embedded AWS with the demo model."""

    name = "dashboard.devtools"
    label = "devtools"
