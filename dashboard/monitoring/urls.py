from django.urls import path

from dashboard.monitoring import views

_ENV = "models/<str:model>/environments/<str:environment>"

urlpatterns = [
    path(f"{_ENV}/metrics/", views.metrics_page, name="monitoring-metrics"),
    path(f"{_ENV}/metrics/data", views.metrics_data, name="monitoring-metrics-data"),
    path(f"{_ENV}/logs/", views.logs_page, name="monitoring-logs"),
    path(f"{_ENV}/logs/rows", views.logs_rows, name="monitoring-logs-rows"),
    path(f"{_ENV}/logs/streams", views.logs_streams, name="monitoring-logs-streams"),
    path(f"{_ENV}/monitoring/", views.settings_page, name="monitoring-settings"),
    path(f"{_ENV}/monitoring/alarm-state", views.alarm_state_test, name="monitoring-alarm-state"),
    path(f"{_ENV}/alarms", views.alarms_fragment, name="monitoring-alarms"),
    path(
        "deployments/<id:deployment_id>/monitoring",
        views.deployment_fragment,
        name="deployment-monitoring",
    ),
]
