"""ModelDeck dashboard: Django project plus its domain apps."""

from dashboard.celery import app as celery_app

__all__ = ["celery_app"]
