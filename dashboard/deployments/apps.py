from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    """Environments of a model and the deployments that change what they serve."""

    name = "dashboard.deployments"
    label = "deployments"

    def ready(self) -> None:
        from dashboard.deployments import checks  # noqa: F401 - registers the checks
