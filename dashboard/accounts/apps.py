from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, roles (viewer/deployer/admin groups) and API tokens."""

    name = "dashboard.accounts"
    label = "accounts"

    def ready(self) -> None:
        from dashboard.accounts import checks  # noqa: F401 - registers the checks
