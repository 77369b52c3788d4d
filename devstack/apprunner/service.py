"""App Runner services and their operations (deployments), as the stand-in runs them."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.apprunner.config import ServiceConfig
from devstack.apprunner.instance import Instance
from devstack.apprunner.logsink import LogRecord, LogSink

# App Runner keeps a bounded operation history; so do we (per service).
_MAX_OPERATIONS = 100
_STATE_SCHEMA = 2


class ServiceStatus(enum.StrEnum):
    """The subset of App Runner's ServiceStatus the stand-in uses."""

    RUNNING = "RUNNING"
    OPERATION_IN_PROGRESS = "OPERATION_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"


class OperationType(enum.StrEnum):
    """The subset of App Runner's OperationType the stand-in performs."""

    CREATE_SERVICE = "CREATE_SERVICE"
    START_DEPLOYMENT = "START_DEPLOYMENT"
    UPDATE_SERVICE = "UPDATE_SERVICE"


class OperationStatus(enum.StrEnum):
    """App Runner's OperationStatus."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    FAILED = "FAILED"
    SUCCEEDED = "SUCCEEDED"
    ROLLBACK_IN_PROGRESS = "ROLLBACK_IN_PROGRESS"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    ROLLBACK_SUCCEEDED = "ROLLBACK_SUCCEEDED"


_TERMINAL = {
    OperationStatus.FAILED,
    OperationStatus.SUCCEEDED,
    OperationStatus.ROLLBACK_FAILED,
    OperationStatus.ROLLBACK_SUCCEEDED,
}


class InvalidStateError(Exception):
    """The service's state does not allow the action (App Runner: InvalidStateException)."""


@dataclass(frozen=True)
class Revision:
    """What an instance of the service runs: the part of the configuration
    that UpdateService changes (the command and its environment)."""

    command: tuple[str, ...]
    env: dict[str, str]
    health_check_path: str
    image_identifier: str

    @classmethod
    def from_config(cls, config: ServiceConfig) -> Revision:
        return cls(
            command=tuple(config.command),
            env=dict(config.env),
            health_check_path=config.health_check_path,
            image_identifier=config.image_identifier,
        )

    def overrides(self, config: ServiceConfig) -> dict[str, Any]:
        """What differs from the configuration file (kept in the state file, so a
        restart keeps deployed changes while the file can move ports and paths)."""
        base = Revision.from_config(config)
        return {
            "env_set": {k: v for k, v in self.env.items() if base.env.get(k) != v},
            "env_unset": sorted(set(base.env) - set(self.env)),
            "command": list(self.command) if self.command != base.command else None,
            "health_check_path": (
                self.health_check_path if self.health_check_path != base.health_check_path else None
            ),
        }

    @classmethod
    def with_overrides(cls, config: ServiceConfig, raw: Any) -> Revision:
        base = cls.from_config(config)
        if not isinstance(raw, dict):
            return base
        env = {k: v for k, v in base.env.items() if k not in set(raw.get("env_unset") or [])}
        env.update({str(k): str(v) for k, v in (raw.get("env_set") or {}).items()})
        command = raw.get("command")
        path = raw.get("health_check_path")
        return cls(
            command=tuple(str(part) for part in command) if command else base.command,
            env=env,
            health_check_path=str(path) if path else base.health_check_path,
            image_identifier=base.image_identifier,
        )


def service_id_for(name: str) -> str:
    """Return the 32-hex service id of ``name``: the same on every start, so stored ARNs last."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"devstack:apprunner:service:{name}").hex


def service_arn_for(*, region: str, account_id: str, name: str) -> str:
    """Return the ARN App Runner would give service ``name``."""
    return f"arn:aws:apprunner:{region}:{account_id}:service/{name}/{service_id_for(name)}"


# The cluster the ECS view of the stand-in's services (ecs_api.py) names.
ECS_CLUSTER = "devstack"


def ecs_service_arn_for(*, region: str, account_id: str, name: str) -> str:
    """Return the ECS (Express Mode) service ARN of service ``name`` (long format)."""
    return f"arn:aws:ecs:{region}:{account_id}:service/{ECS_CLUSTER}/{name}"


# Where the ECS view's service logs and is load-balanced, as an Express
# service reports it (awsLogsConfiguration; ecsManagedResources): the awslogs
# driver names streams <prefix>/<container>/<task id>.
ECS_LOG_STREAM_PREFIX = "inference"
ECS_CONTAINER = "main"


def ecs_log_group_for(name: str) -> str:
    return f"/ecs/{name}"


def ecs_load_balancer_for(*, region: str, account_id: str, name: str) -> tuple[str, str]:
    """(load balancer ARN, target group ARN) the ECS view reports for ``name``."""
    suffix = service_id_for(name)[:16]
    elb = f"arn:aws:elasticloadbalancing:{region}:{account_id}"
    group = "".join(c if c.isalnum() else "-" for c in name)[:24].strip("-") or "tg"
    return (
        f"{elb}:loadbalancer/app/devstack-express/{suffix}",
        f"{elb}:targetgroup/{group}/{suffix}",
    )


@dataclass
class Operation:
    """One asynchronous operation on a service, shaped like App Runner's OperationSummary."""

    id: str
    type: OperationType
    status: OperationStatus
    target_arn: str
    started_at: float
    updated_at: float
    ended_at: float | None = None

    @property
    def finished(self) -> bool:
        """True once the status is terminal."""
        return self.status in _TERMINAL

    def to_api(self) -> dict[str, Any]:
        """Return the OperationSummary JSON object."""
        summary: dict[str, Any] = {
            "Id": self.id,
            "Type": self.type.value,
            "Status": self.status.value,
            "TargetArn": self.target_arn,
            "StartedAt": self.started_at,
            "UpdatedAt": self.updated_at,
        }
        if self.ended_at is not None:
            summary["EndedAt"] = self.ended_at
        return summary

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> Operation:
        """Rebuild an operation from ``to_api`` output (the state file)."""
        return cls(
            id=str(raw["Id"]),
            type=OperationType(raw["Type"]),
            status=OperationStatus(raw["Status"]),
            target_arn=str(raw["TargetArn"]),
            started_at=float(raw["StartedAt"]),
            updated_at=float(raw["UpdatedAt"]),
            ended_at=float(raw["EndedAt"]) if raw.get("EndedAt") is not None else None,
        )


class Service:
    """One App Runner service: a stable proxied URL in front of its current instance.

    State changes only happen on the stand-in's event loop, so checking and
    changing the status in one synchronous step is atomic.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        region: str,
        account_id: str,
        state_dir: Path,
        sink: LogSink,
    ) -> None:
        self.config = config
        self.name = config.name
        self.id = service_id_for(config.name)
        self.arn = service_arn_for(region=region, account_id=account_id, name=config.name)
        self.ecs_arn = ecs_service_arn_for(region=region, account_id=account_id, name=config.name)
        self.ecs_load_balancer, self.ecs_target_group = ecs_load_balancer_for(
            region=region, account_id=account_id, name=config.name
        )
        self.region = region
        self.account_id = account_id
        self.url = ""  # host:port, set once the proxy is bound
        self.status = ServiceStatus.OPERATION_IN_PROGRESS
        self.created_at = time.time()
        self.updated_at = self.created_at
        self.current: Instance | None = None
        # The revision instances run; during an UPDATE_SERVICE, the one being
        # deployed (DescribeService shows it) until it succeeds or rolls back.
        self.revision = Revision.from_config(config)
        self.pending_revision: Revision | None = None
        self._operations: list[Operation] = []  # newest first
        self._instances: set[Instance] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}  # operation id -> its task
        # Operations whose traffic moved to the new instance, and those a
        # client asked to roll back (ECS StopServiceDeployment).
        self.switched: set[str] = set()
        self.rollback_requested: set[str] = set()
        self._sink = sink
        self._state_file = state_dir / "services" / f"{config.name}.json"
        self._load_state()

    # -- API views ------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Return the ServiceSummary JSON object."""
        return {
            "ServiceName": self.name,
            "ServiceId": self.id,
            "ServiceArn": self.arn,
            "ServiceUrl": self.url,
            "CreatedAt": self.created_at,
            "UpdatedAt": self.updated_at,
            "Status": self.status.value,
        }

    def describe(self) -> dict[str, Any]:
        """Return the Service JSON object of DescribeService."""
        config = self.config
        revision = self.pending_revision or self.revision
        port = "8080"
        interval = min(20, max(1, round(config.health_check_interval_seconds)))
        return {
            **self.summary(),
            "SourceConfiguration": {
                "ImageRepository": {
                    "ImageIdentifier": revision.image_identifier,
                    "ImageConfiguration": {
                        "RuntimeEnvironmentVariables": dict(revision.env),
                        "StartCommand": shlex.join(revision.command),
                        "Port": port,
                    },
                    "ImageRepositoryType": "ECR_PUBLIC",
                },
                "AutoDeploymentsEnabled": False,
            },
            "InstanceConfiguration": {"Cpu": "1024", "Memory": "2048"},
            "HealthCheckConfiguration": {
                "Protocol": "HTTP",
                "Path": revision.health_check_path,
                "Interval": interval,
                "Timeout": 5,
                "HealthyThreshold": 1,
                "UnhealthyThreshold": 5,
            },
            "AutoScalingConfigurationSummary": {
                "AutoScalingConfigurationArn": (
                    f"arn:aws:apprunner:{self.region}:{self.account_id}:autoscalingconfiguration/"
                    "DefaultConfiguration/1/00000000000000000000000000000001"
                ),
                "AutoScalingConfigurationName": "DefaultConfiguration",
                "AutoScalingConfigurationRevision": 1,
                "Status": "ACTIVE",
                "CreatedAt": self.created_at,
                "HasAssociatedService": True,
                "IsDefault": True,
            },
            "NetworkConfiguration": {
                "EgressConfiguration": {"EgressType": "DEFAULT"},
                "IngressConfiguration": {"IsPubliclyAccessible": True},
                "IpAddressType": "IPV4",
            },
            "ObservabilityConfiguration": {"ObservabilityEnabled": False},
        }

    def operations(self) -> list[Operation]:
        """Return the operations, newest first."""
        return list(self._operations)

    def routable_instance(self) -> Instance | None:
        """Return the instance that should answer a request now, or None (answer 503)."""
        current = self.current
        return current if current is not None and current.running else None

    # -- actions --------------------------------------------------------------

    def create(self) -> Operation:
        """Start the first instance (a CREATE_SERVICE operation); return the operation.

        Also starts the watchdog that replaces an instance that dies while the
        service is running, as App Runner replaces failed instances."""
        operation = self._begin(OperationType.CREATE_SERVICE)
        watchdog = asyncio.get_running_loop().create_task(self._watch_instances())
        self._tasks.add(watchdog)
        watchdog.add_done_callback(self._tasks.discard)
        return operation

    def start_deployment(self) -> Operation:
        """Start a deployment (a START_DEPLOYMENT operation); return the operation.

        Raises InvalidStateError while another operation is in progress. Unlike
        AWS, a CREATE_FAILED service accepts it too, so a local service whose
        first start failed can be fixed by deploying again.
        """
        if self.status == ServiceStatus.OPERATION_IN_PROGRESS:
            raise InvalidStateError(
                f"You can't perform this action when the service is in "
                f"{ServiceStatus.OPERATION_IN_PROGRESS} state"
            )
        return self._begin(OperationType.START_DEPLOYMENT)

    def update(self, revision: Revision) -> Operation:
        """Deploy ``revision`` (an UPDATE_SERVICE operation); return the operation.

        Like AWS, the service shows the new configuration while the operation
        runs and goes back to the previous one if the new instance never
        becomes healthy. Raises InvalidStateError while another operation is
        in progress.
        """
        if self.status == ServiceStatus.OPERATION_IN_PROGRESS:
            raise InvalidStateError(
                f"You can't perform this action when the service is in "
                f"{ServiceStatus.OPERATION_IN_PROGRESS} state"
            )
        self.pending_revision = revision
        return self._begin(OperationType.UPDATE_SERVICE)

    def roll_back(self, operation_id: str) -> None:
        """Stop an operation in progress and keep the previous instance (what
        ECS's StopServiceDeployment with ROLLBACK does). Raises
        InvalidStateError when the operation has ended or its traffic has
        already moved (the stand-in switches all traffic at once)."""
        task = self._running.get(operation_id)
        operation = next((o for o in self._operations if o.id == operation_id), None)
        if (
            task is None
            or task.done()
            or operation is None
            or operation.status not in {OperationStatus.PENDING, OperationStatus.IN_PROGRESS}
            or operation_id in self.switched
        ):
            raise InvalidStateError(f"operation {operation_id} is not in progress")
        if operation_id not in self.rollback_requested:
            self.rollback_requested.add(operation_id)
            task.cancel()

    async def stop(self) -> None:
        """Cancel the operation in progress and stop every instance of the service."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(i.stop(self.config.stop_grace_seconds) for i in list(self._instances)),
            return_exceptions=True,
        )
        self._instances.clear()
        self.current = None

    # -- internals ------------------------------------------------------------

    def _begin(self, kind: OperationType) -> Operation:
        now = time.time()
        operation = Operation(
            id=str(uuid.uuid4()),
            type=kind,
            status=OperationStatus.PENDING,
            target_arn=self.arn,
            started_at=now,
            updated_at=now,
        )
        self._operations.insert(0, operation)
        del self._operations[_MAX_OPERATIONS:]
        previous_status = self.status
        self._set_status(ServiceStatus.OPERATION_IN_PROGRESS)
        self._save_state()
        task = asyncio.get_running_loop().create_task(self._deploy(operation, previous_status))
        self._tasks.add(task)
        self._running[operation.id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.pop(operation.id, None))
        return operation

    async def _deploy(self, operation: Operation, previous_status: ServiceStatus) -> None:
        """Run one operation to its end; the service never stays OPERATION_IN_PROGRESS."""
        candidate: Instance | None = None
        try:
            self._set_operation(operation, OperationStatus.IN_PROGRESS)
            self._event(f"{operation.type} {operation.id} started")
            revision = self.pending_revision or self.revision
            candidate = Instance(
                service=self.name,
                service_arn=self.arn,
                command=revision.command,
                env=revision.env,
                cwd=self.config.cwd,
                sink=self._sink,
                orphan_grace=self.config.stop_grace_seconds,
            )
            self._instances.add(candidate)
            try:
                await candidate.start()
            except OSError as exc:
                reason: str | None = f"cannot start {shlex.join(revision.command)}: {exc}"
            else:
                reason = await candidate.wait_healthy(
                    path=revision.health_check_path,
                    timeout=self.config.health_check_timeout_seconds,
                    interval=self.config.health_check_interval_seconds,
                )
            if reason is None:
                await self._switch_to(candidate, operation)
            else:
                await self._fail(operation, candidate, reason, previous_status)
        except asyncio.CancelledError:
            if operation.id in self.rollback_requested:
                self._event(f"{operation.type} {operation.id}: rollback requested")
                if candidate is not None:
                    await self._fail(
                        operation, candidate, "a rollback was requested", previous_status
                    )
                else:
                    self.pending_revision = None
                    self._finish(operation, OperationStatus.ROLLBACK_SUCCEEDED, previous_status)
                return
            self.pending_revision = None
            self._finish(operation, OperationStatus.FAILED, previous_status)
            self._event(f"{operation.type} {operation.id} interrupted: the stand-in is stopping")
            raise
        except Exception as exc:
            self._event(f"{operation.type} {operation.id} failed unexpectedly: {exc!r}")
            if candidate is not None and candidate is not self.current:
                await self._retire(candidate)
            self.pending_revision = None
            self._finish(operation, OperationStatus.FAILED, previous_status)

    async def _watch_instances(self) -> None:
        """Replace the serving instance when its process exits (a crash, the
        OOM killer, kill -9) while no operation runs: a new instance of the
        same revision, switched to once healthy; no operation is recorded
        (App Runner's own instance replacement is not an operation either)."""
        interval = max(0.2, self.config.health_check_interval_seconds)
        while True:
            await asyncio.sleep(interval)
            dead = self.current
            if self.status != ServiceStatus.RUNNING or dead is None or dead.running:
                continue
            self._event(f"instance {dead.id} exited (code {dead.returncode}); replacing it")
            self._instances.discard(dead)
            replacement = Instance(
                service=self.name,
                service_arn=self.arn,
                command=self.revision.command,
                env=self.revision.env,
                cwd=self.config.cwd,
                sink=self._sink,
                orphan_grace=self.config.stop_grace_seconds,
            )
            self._instances.add(replacement)
            try:
                await replacement.start()
                reason = await replacement.wait_healthy(
                    path=self.revision.health_check_path,
                    timeout=self.config.health_check_timeout_seconds,
                    interval=self.config.health_check_interval_seconds,
                )
            except OSError as exc:
                reason = str(exc)
            if reason is None and self.current is dead:
                self.current = replacement
                self._event(f"instance {replacement.id} replaced {dead.id}")
            else:
                self._event(f"replacement instance {replacement.id} failed: {reason}")
                await self._retire(replacement)

    async def _switch_to(self, candidate: Instance, operation: Operation) -> None:
        old = self.current
        # The one step that moves traffic: requests already routed to ``old`` keep it busy.
        self.current = candidate
        self.switched.add(operation.id)
        if self.pending_revision is not None:
            self.revision, self.pending_revision = self.pending_revision, None
        self._event(f"instance {candidate.id} is healthy; traffic switched to it")
        if old is not None:
            if not await old.drain(self.config.drain_timeout_seconds):
                self._event(
                    f"instance {old.id} still had requests in flight after "
                    f"{self.config.drain_timeout_seconds:g} s; stopping it anyway"
                )
            await self._retire(old)
        self._finish(operation, OperationStatus.SUCCEEDED, ServiceStatus.RUNNING)
        self._event(f"{operation.type} {operation.id} succeeded")

    async def _fail(
        self,
        operation: Operation,
        candidate: Instance,
        reason: str,
        previous_status: ServiceStatus,
    ) -> None:
        self._event(f"{operation.type} {operation.id} failed: {reason}")
        self.pending_revision = None  # back to the previous configuration
        lines = candidate.last_lines()
        if lines:
            self._event(f"last {len(lines)} output lines of instance {candidate.id}:")
            for line in lines:
                self._event(f"  | {line}")
        has_previous = self.current is not None
        if operation.type == OperationType.CREATE_SERVICE or not has_previous:
            await self._retire(candidate)
            failed_status = (
                ServiceStatus.CREATE_FAILED
                if operation.type == OperationType.CREATE_SERVICE
                or previous_status == ServiceStatus.CREATE_FAILED
                else ServiceStatus.RUNNING
            )
            self._finish(operation, OperationStatus.FAILED, failed_status)
            return
        self._set_operation(operation, OperationStatus.ROLLBACK_IN_PROGRESS)
        await self._retire(candidate)
        rolled_back = self.routable_instance() is not None
        outcome = (
            OperationStatus.ROLLBACK_SUCCEEDED if rolled_back else OperationStatus.ROLLBACK_FAILED
        )
        self._finish(operation, outcome, ServiceStatus.RUNNING)
        self._event(
            f"{operation.type} {operation.id}: {outcome}; "
            + (
                f"instance {self.current.id} keeps serving"
                if rolled_back and self.current
                else "no healthy previous instance to roll back to"
            )
        )

    async def _retire(self, instance: Instance) -> None:
        await instance.stop(self.config.stop_grace_seconds)
        self._instances.discard(instance)

    def _finish(
        self, operation: Operation, status: OperationStatus, service_status: ServiceStatus
    ) -> None:
        now = time.time()
        operation.status = status
        operation.updated_at = now
        operation.ended_at = now
        self._set_status(service_status)
        self._save_state()

    def _set_operation(self, operation: Operation, status: OperationStatus) -> None:
        operation.status = status
        operation.updated_at = time.time()
        self._save_state()

    def _set_status(self, status: ServiceStatus) -> None:
        self.status = status
        self.updated_at = time.time()

    def _event(self, message: str) -> None:
        self._sink.emit(
            LogRecord(
                timestamp=time.time(),
                service=self.name,
                service_arn=self.arn,
                instance_id=None,
                stream="service",
                message=message,
            )
        )

    def _load_state(self) -> None:
        """Keep CreatedAt and the operation history across restarts of the stand-in."""
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
            if raw.get("schema") != _STATE_SCHEMA or raw.get("service_arn") != self.arn:
                return
            created_at = float(raw["created_at"])
            operations = [Operation.from_api(item) for item in raw["operations"]]
            revision = Revision.with_overrides(self.config, raw.get("revision"))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._event(f"ignoring unreadable state file {self._state_file}: {exc}")
            return
        now = time.time()
        for operation in operations:
            if not operation.finished:
                # Its process died with the previous stand-in.
                operation.status = OperationStatus.FAILED
                operation.updated_at = now
                operation.ended_at = now
        self.created_at = created_at
        self._operations = operations[:_MAX_OPERATIONS]
        self.revision = revision

    def _save_state(self) -> None:
        document = {
            "schema": _STATE_SCHEMA,
            "service_arn": self.arn,
            "created_at": self.created_at,
            "operations": [operation.to_api() for operation in self._operations],
            # The last revision that went live (not one still being deployed).
            "revision": self.revision.overrides(self.config),
        }
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._state_file.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(document), encoding="utf-8")
            os.replace(temporary, self._state_file)
        except OSError as exc:
            # The history is a convenience; the service keeps working without it.
            with contextlib.suppress(Exception):
                self._event(f"cannot save state to {self._state_file}: {exc}")
