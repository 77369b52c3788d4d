"""A local stand-in for AWS App Runner (which moto and LocalStack lack).

It serves App Runner's real JSON 1.0 API (StartDeployment, DescribeService,
ListOperations, ListServices) for the services in its configuration, and runs
each service for real: a subprocess per instance, health-checked, behind a
reverse proxy on the service's stable port, swapped without a gap on
deployment and rolled back when the new instance never gets healthy.

Run it with ``python -m devstack.apprunner --config PATH`` (see
``devstack.apprunner.config`` for the file), or in-process with
``run_in_background``. Usage, configuration and the deliberate differences
from AWS are in this package's README.md.
"""

from devstack.apprunner.config import ConfigError, ServiceConfig, StandInConfig, load_config
from devstack.apprunner.logsink import LogRecord, LogSink
from devstack.apprunner.server import RunningStandIn, StandIn, run_in_background
from devstack.apprunner.service import service_arn_for, service_id_for

__all__ = [
    "ConfigError",
    "LogRecord",
    "LogSink",
    "RunningStandIn",
    "ServiceConfig",
    "StandIn",
    "StandInConfig",
    "load_config",
    "run_in_background",
    "service_arn_for",
    "service_id_for",
]
