"""The bake window: how long a new revision must stay healthy, and whether
one of the environment's alarms fires meanwhile (the monitoring app owns the
alarms; this is the deployment state machine's view of them)."""

from __future__ import annotations

from dashboard.monitoring.selectors import AlarmState, alarms_firing, bake_minutes

__all__ = ["AlarmState", "alarms_firing", "bake_minutes"]
