"""System checks for the web-security settings (run by `manage.py check`,
`check --deploy` and at startup)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def proxy_settings(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Production redirects plain HTTP to HTTPS. Behind a proxy that ends TLS,
    the dashboard only knows a request was HTTPS if that proxy is named in
    TRUSTED_PROXIES; otherwise every request is redirected, forever."""
    if not (settings.PRODUCTION and settings.SECURE_SSL_REDIRECT):
        return []
    if settings.BEHIND_TRUSTED_PROXY:
        return []
    return [
        Warning(
            "MODELDECK_ENV=production redirects HTTP to HTTPS but TRUSTED_PROXIES is empty",
            hint=(
                "Behind a load balancer or proxy that ends TLS, set TRUSTED_PROXIES to its "
                "addresses or networks (e.g. 10.0.0.0/8), or every request is redirected in a "
                "loop. Ignore this only if gunicorn itself serves HTTPS."
            ),
            id="modeldeck.W010",
        )
    ]
