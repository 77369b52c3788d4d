"""System checks for the AWS settings: fail `manage.py check` (and startup)
with a message instead of failing the first request."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


@register()
def aws_settings(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if not _BUCKET_RE.fullmatch(settings.MODELS_BUCKET) or ".." in settings.MODELS_BUCKET:
        messages.append(
            Error(
                f"MODELS_BUCKET={settings.MODELS_BUCKET!r} is not a valid S3 bucket name",
                hint="3-63 lowercase letters, digits, '.' and '-'",
                id="modeldeck.E001",
            )
        )
    if not _REGION_RE.fullmatch(settings.AWS_REGION):
        messages.append(
            Error(
                f"AWS_REGION={settings.AWS_REGION!r} is not an AWS region name",
                hint="e.g. us-east-1, eu-west-1",
                id="modeldeck.E002",
            )
        )
    if settings.PRODUCTION and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        messages.append(
            Warning(
                "MODELDECK_ENV=production with SQLite: use PostgreSQL (DATABASE_URL)",
                id="modeldeck.W001",
            )
        )
    return messages
