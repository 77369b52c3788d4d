"""The Celery application; settings come from Django's (CELERY_* names)."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Sent every second or two by beat: their "received / succeeded / sending due
# task" lines would drown everything else. Their work logs what it does.
QUIET_TASKS = (
    "deployments_reconcile",
    "deployments-reconcile",
    "webhooks_dispatch_due",
    "webhooks-dispatch-due",
)


class QuietPeriodicTasks(logging.Filter):
    """Drops Celery's INFO bookkeeping lines about the frequent periodic tasks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not any(name in message for name in QUIET_TASKS)


def _quieten(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        handler.addFilter(QuietPeriodicTasks())


after_setup_logger.connect(_quieten)
after_setup_task_logger.connect(_quieten)
