"""What App Runner sends to CloudWatch, sent to the embedded one.

``CloudWatchShipper`` is a log sink and a request observer of the stand-in:

- **Logs**: every line an instance prints goes to
  ``/aws/apprunner/<service>/<id>/application``, stream ``instance/<instance-id>``;
  every service event goes to ``/aws/apprunner/<service>/<id>/service``, stream
  ``events``, and, while it belongs to an operation (a deployment), also to
  ``deployment/<operation-id>``. Batched: one PutLogEvents per stream and
  second at most; groups and streams are created on first use.
- **Service metrics** (``AWS/AppRunner``, dimensions ``ServiceName`` and
  ``ServiceID``), every ``metrics_seconds``: ``Requests``,
  ``2xxStatusResponses``, ``4xxStatusResponses``, ``5xxStatusResponses``,
  ``RequestLatency`` (a statistic set, milliseconds), ``ActiveInstances``,
  ``Concurrency`` (the most requests in flight at once), and on Linux
  ``CPUUtilization`` and ``MemoryUtilization`` of the instance's process group
  (against App Runner's default 1 vCPU and 2 GB, which DescribeService reports).
- **EMF**: a line of an instance that is a CloudWatch Embedded Metric Format
  document becomes metrics, as CloudWatch Logs does with EMF in any log group.
  Values may be numbers, arrays of numbers, statistic sets
  (``{"Min", "Max", "Count", "Sum"}``) or histograms (``Values``/``Counts``,
  usually with the exact statistic set, as AWS's EMF libraries write them).
  Values are aggregated per metric and window into one statistic set.
- **Percentiles**: CloudWatch computes percentiles from the values it stores;
  the embedded one (moto) computes none. So for RequestLatency and for every
  EMF metric with a time unit, each window's p50, p90 and p99 are published as
  their own metric in ``percentiles_namespace`` (default ``DevStack/Percentiles``),
  with the original dimensions plus ``SourceNamespace`` and ``Statistic``.
  The dashboard reads them when ``CLOUDWATCH_PERCENTILES_NAMESPACE`` names it.

With ``ecs=True`` (the local stack on the ECS target) the same numbers and lines
go out under the names an ECS Express service and its load balancer use, the
ones the stand-in's ECS view reports: application lines to
``/ecs/<service>``, streams ``inference/main/<instance-id>`` (awslogs'
``<prefix>/<container>/<task-id>``); ``AWS/ECS`` ``CPUUtilization`` and
``MemoryUtilization`` (``ClusterName``, ``ServiceName``); ``AWS/ApplicationELB``
``RequestCount``, ``HTTPCode_Target_{2,4,5}XX_Count``, ``TargetResponseTime``
(seconds, and its percentiles) and ``HealthyHostCount`` (``LoadBalancer``,
``TargetGroup``). Service events stay in App Runner's service group.

CloudWatch being slow or down never slows the stand-in: records are queued
(bounded; the oldest are dropped and counted) and shipped from one thread.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from devstack.apprunner.logsink import LogRecord
from devstack.apprunner.service import (
    ECS_CLUSTER,
    ECS_CONTAINER,
    ECS_LOG_STREAM_PREFIX,
    ecs_log_group_for,
)

if TYPE_CHECKING:
    from devstack.apprunner.service import Service

APPRUNNER_NAMESPACE = "AWS/AppRunner"
ECS_NAMESPACE = "AWS/ECS"
ALB_NAMESPACE = "AWS/ApplicationELB"
DEFAULT_PERCENTILES_NAMESPACE = "DevStack/Percentiles"
PERCENTILES = (50, 90, 99)
TIME_UNITS = {"Seconds", "Milliseconds", "Microseconds"}
_MAX_QUEUE = 200_000
_MAX_BATCH_EVENTS = 10_000
_MAX_BATCH_BYTES = 1_000_000  # PutLogEvents allows 1,048,576 with 26 bytes per event
_EVENT_OVERHEAD = 26
_MAX_METRICS_PER_CALL = 500
# App Runner's default instance size, as DescribeService reports it.
_VCPUS = 1.0
_MEMORY_BYTES = 2048 * 1024 * 1024
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log_groups(service_name: str, service_id: str) -> tuple[str, str]:
    """App Runner's (application, service) log group names of a service."""
    base = f"/aws/apprunner/{service_name}/{service_id}"
    return f"{base}/application", f"{base}/service"


# --- Aggregation ------------------------------------------------------------------


@dataclass
class Distribution:
    """Values of one metric in one window: a statistic set, plus the raw values
    (when known) that percentiles are computed from."""

    count: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    values: list[float] = field(default_factory=list)
    raw_complete: bool = True  # every value of the window is in ``values``

    def add(self, value: float, count: float = 1.0) -> None:
        self.count += count
        self.total += value * count
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        if count == int(count) and len(self.values) + count <= 100_000:
            self.values.extend([value] * int(count))
        else:
            self.raw_complete = False

    def add_histogram(
        self,
        values: list[float],
        counts: list[float],
        *,
        exact: tuple[float, float, float, float] | None,
    ) -> None:
        """An EMF histogram: values (bin centres) with their counts, and when
        given the exact (count, sum, min, max) of what was binned, which the
        statistic set uses (the bins only feed the percentiles)."""
        if exact is None:
            for value, count in zip(values, counts, strict=True):
                self.add(value, count)
            return
        count, total, minimum, maximum = exact
        self.count += count
        self.total += total
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)
        integral = all(c == int(c) for c in counts)
        if integral and len(self.values) + sum(counts) <= 100_000:
            for value, n in zip(values, counts, strict=True):
                self.values.extend([value] * int(n))
        else:
            self.raw_complete = False

    def add_set(self, *, count: float, total: float, minimum: float, maximum: float) -> None:
        self.count += count
        self.total += total
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)
        self.raw_complete = False

    def statistic_set(self) -> dict[str, float]:
        return {
            "SampleCount": self.count,
            "Sum": self.total,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
        }

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the raw values, None without them."""
        if not self.values or not self.raw_complete:
            return None
        ordered = sorted(self.values)
        rank = max(1, math.ceil(p / 100.0 * len(ordered)))
        return ordered[rank - 1]


MetricKey = tuple[str, str, tuple[tuple[str, str], ...], str | None]  # ns, name, dims, unit


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_emf(line: str) -> list[tuple[MetricKey, float, Any]] | None:
    """The metrics of one EMF line as (key, timestamp in seconds, value), or None
    if the line is not a valid EMF document. ``value`` is a float, a list of
    floats, or a dict statistic set."""
    text = line.strip()
    if not (text.startswith("{") and '"_aws"' in text):
        return None
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    meta = document.get("_aws")
    if not isinstance(meta, dict):
        return None
    stamp = _number(meta.get("Timestamp"))
    directives = meta.get("CloudWatchMetrics")
    if stamp is None or not isinstance(directives, list):
        return None
    found: list[tuple[MetricKey, float, Any]] = []
    for directive in directives:
        if not isinstance(directive, dict):
            return None
        namespace = directive.get("Namespace")
        dimension_sets = directive.get("Dimensions", [[]])
        metrics = directive.get("Metrics")
        if not isinstance(namespace, str) or not namespace or not isinstance(metrics, list):
            return None
        if not isinstance(dimension_sets, list):
            return None
        resolved_sets = []
        for keys in dimension_sets or [[]]:
            if not isinstance(keys, list) or len(keys) > 30:
                return None
            pairs = []
            for key in keys:
                value = document.get(key) if isinstance(key, str) else None
                if not isinstance(value, str) or not value:
                    return None  # CloudWatch rejects a dimension without a string value
                pairs.append((key, value))
            resolved_sets.append(tuple(pairs))
        for metric in metrics:
            if not isinstance(metric, dict) or not isinstance(metric.get("Name"), str):
                return None
            name = metric["Name"]
            unit = metric.get("Unit") if isinstance(metric.get("Unit"), str) else None
            value = document.get(name)
            if not _valid_value(value):
                return None
            for dims in resolved_sets:
                found.append(((namespace, name, dims, unit), stamp / 1000.0, value))
    return found


def _valid_array(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 0 < len(value) <= 100
        and all(_number(v) is not None for v in value)
    )


def _valid_set(value: Any) -> bool:
    return isinstance(value, dict) and all(
        _number(value.get(k)) is not None for k in ("Min", "Max", "Count", "Sum")
    )


def _valid_value(value: Any) -> bool:
    """A number, up to 100 numbers, a statistic set, or a histogram (Values and
    Counts of the same length, up to 100, with or without the statistic set)."""
    if _number(value) is not None or _valid_array(value) or _valid_set(value):
        return True
    if not isinstance(value, dict):
        return False
    values: Any = value.get("Values")
    counts: Any = value.get("Counts")
    return _valid_array(values) and (
        counts is None or (_valid_array(counts) and len(counts) == len(values))
    )


def _add_value(distribution: Distribution, value: Any) -> None:
    number = _number(value)
    if number is not None:
        distribution.add(number)
    elif isinstance(value, list):
        for item in value:
            distribution.add(float(item))
    elif isinstance(value, dict):
        values: Any = value.get("Values")
        counts: Any = value.get("Counts")
        if _valid_array(values) and (
            counts is None or (_valid_array(counts) and len(counts) == len(values))
        ):
            distribution.add_histogram(
                [float(v) for v in values],
                [float(c) for c in counts] if counts else [1.0] * len(values),
                exact=(
                    (
                        float(value["Count"]),
                        float(value["Sum"]),
                        float(value["Min"]),
                        float(value["Max"]),
                    )
                    if _valid_set(value)
                    else None
                ),
            )
            return
        distribution.add_set(
            count=float(value["Count"]),
            total=float(value["Sum"]),
            minimum=float(value["Min"]),
            maximum=float(value["Max"]),
        )


@dataclass
class _ServiceWindow:
    requests: int = 0
    by_class: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: Distribution = field(default_factory=Distribution)
    in_flight: int = 0
    max_in_flight: int = 0


# --- /proc ----------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_group_usage(pgid: int) -> tuple[float, int] | None:
    """(CPU seconds used so far, resident bytes) of every process in ``pgid``,
    from /proc (Linux); None where there is no /proc."""
    if not os.path.isdir("/proc/self"):
        return None
    cpu = 0.0
    rss = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses.
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 22 or int(fields[2]) != pgid:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        rss += int(fields[21]) * _PAGE_SIZE
    return cpu, rss


# --- The shipper -------------------------------------------------------------------------


class CloudWatchShipper:
    """Ships the stand-in's logs and metrics to CloudWatch Logs and CloudWatch.

    ``emit`` and the request hooks run on the stand-in's event loop and only
    queue or count; a thread does the shipping. Call ``start(services)`` once
    the services exist and ``close()`` at the end (it flushes).
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        metrics_seconds: float = 5.0,
        logs_seconds: float = 1.0,
        percentiles_namespace: str = DEFAULT_PERCENTILES_NAMESPACE,
        clients: tuple[Any, Any] | None = None,
        ecs: bool = False,
    ) -> None:
        self.ecs = ecs
        self.metrics_seconds = metrics_seconds
        self.logs_seconds = logs_seconds
        self.percentiles_namespace = percentiles_namespace
        if clients is None:
            config = Config(
                region_name=region,
                connect_timeout=2,
                read_timeout=10,
                retries={"mode": "standard", "max_attempts": 3},
            )
            session = boto3.session.Session()
            clients = (
                session.client("logs", endpoint_url=endpoint_url, config=config),
                session.client("cloudwatch", endpoint_url=endpoint_url, config=config),
            )
        # Any: the boto3-stubs types would reject the plain dicts built here.
        self._logs: Any = clients[0]
        self._cloudwatch: Any = clients[1]
        self._queue: queue.SimpleQueue[tuple[LogRecord, tuple[str, ...]]] = queue.SimpleQueue()
        self.dropped = 0
        self.shipped_events = 0
        self.metric_calls = 0
        self.log_calls = 0
        self._services: dict[str, Service] = {}
        self._lock = threading.Lock()
        self._windows: dict[str, _ServiceWindow] = {}
        self._emf: dict[tuple[MetricKey, int], Distribution] = {}
        self._cpu_seen: dict[int, tuple[float, float]] = {}  # pgid -> (cpu s, wall s)
        self._known_streams: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning = 0.0

    # -- wiring --------------------------------------------------------------------

    def start(self, services: Iterable[Service]) -> None:
        """Begin shipping for ``services`` (the stand-in's, once created)."""
        self._services = {s.name: s for s in services}
        for name in self._services:
            self._windows.setdefault(name, _ServiceWindow())
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="apprunner-cloudwatch", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Flush what is queued and stop the shipping thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        else:
            self._flush_logs()
            self._flush_metrics(final=True)

    def flush(self) -> None:
        """Ship everything now (tests): logs and the current metrics window."""
        self._flush_logs()
        self._flush_metrics(final=True)

    # -- LogSink ---------------------------------------------------------------------

    def emit(self, record: LogRecord) -> None:
        streams = self._streams_for(record)
        queued = self._queue.qsize()
        if queued >= _MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.put((record, streams))
        if queued >= _MAX_BATCH_EVENTS // 2:
            self._wake.set()

    def _streams_for(self, record: LogRecord) -> tuple[str, ...]:
        """Where a record goes (called on the event loop, so an operation's state
        is read at the moment the record was made)."""
        if record.stream != "service":
            return (f"instance/{record.instance_id or 'unknown'}",)
        service = self._services.get(record.service)
        if service is None:
            return ("events",)
        operations = service.operations()
        ids = {op.id for op in operations}
        named = [m for m in _UUID.findall(record.message) if m in ids]
        if named:
            return ("events", f"deployment/{named[0]}")
        if operations and not operations[0].finished:
            return ("events", f"deployment/{operations[0].id}")
        return ("events",)

    # -- RequestObserver -----------------------------------------------------------------

    def request_started(self, service: str) -> None:
        with self._lock:
            window = self._windows.setdefault(service, _ServiceWindow())
            window.in_flight += 1
            window.max_in_flight = max(window.max_in_flight, window.in_flight)

    def request_finished(self, service: str, status: int, seconds: float) -> None:
        with self._lock:
            window = self._windows.setdefault(service, _ServiceWindow())
            window.in_flight = max(0, window.in_flight - 1)
            window.requests += 1
            window.by_class[f"{status // 100}xx"] += 1
            window.latency.add(seconds * 1000.0)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        next_metrics = time.monotonic() + self.metrics_seconds
        while True:
            stopping = self._stop.is_set()
            self._wake.wait(self.logs_seconds)
            self._wake.clear()
            try:
                self._flush_logs()
                if stopping or time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + self.metrics_seconds
                    self._flush_metrics(final=stopping)
            except Exception as exc:  # a bug must not end the thread
                self._warn(f"shipping to CloudWatch failed: {exc!r}")
            if stopping:
                return

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            sys.stderr.write(f"apprunner: {message}\n")

    # -- logs --------------------------------------------------------------------------------

    def _flush_logs(self) -> None:
        batches: dict[tuple[str, str], list[LogRecord]] = collections.defaultdict(list)
        emf: list[LogRecord] = []
        while True:
            try:
                record, streams = self._queue.get_nowait()
            except queue.Empty:
                break
            service = self._services.get(record.service)
            service_id = (
                service.id if service is not None else record.service_arn.rsplit("/", 1)[-1]
            )
            application, service_group = log_groups(record.service, service_id)
            group = service_group if record.stream == "service" else application
            if self.ecs and record.stream != "service":
                group = ecs_log_group_for(record.service)
                instance = record.instance_id or "unknown"
                streams = (f"{ECS_LOG_STREAM_PREFIX}/{ECS_CONTAINER}/{instance}",)
            for stream in streams:
                batches[(group, stream)].append(record)
            if record.stream != "service" and '"_aws"' in record.message:
                emf.append(record)
        for (group, stream), records in batches.items():
            records.sort(key=lambda r: r.timestamp)
            for chunk in _chunks(records):
                self._put_log_events(group, stream, chunk)
        for record in emf:
            self._collect_emf(record)

    def _put_log_events(self, group: str, stream: str, records: list[LogRecord]) -> None:
        events = [
            {"timestamp": int(r.timestamp * 1000), "message": r.message or " "} for r in records
        ]
        for attempt in range(2):
            try:
                if (group, stream) not in self._known_streams:
                    self._create(group, stream)
                self._logs.put_log_events(
                    logGroupName=group, logStreamName=stream, logEvents=events
                )
                self.log_calls += 1
                self.shipped_events += len(events)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException" and attempt == 0:
                    self._known_streams.discard((group, stream))
                    continue
                self._warn(f"PutLogEvents to {group} {stream} failed: {code}: {exc}")
                return
            except BotoCoreError as exc:
                self._warn(f"PutLogEvents to {group} {stream} failed: {exc}")
                return

    def _create(self, group: str, stream: str) -> None:
        for call, kwargs in (
            (self._logs.create_log_group, {"logGroupName": group}),
            (self._logs.create_log_stream, {"logGroupName": group, "logStreamName": stream}),
        ):
            try:
                call(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
                    raise
        self._known_streams.add((group, stream))

    # -- metrics ---------------------------------------------------------------------------------

    def _collect_emf(self, record: LogRecord) -> None:
        found = parse_emf(record.message)
        if not found:
            return
        for key, stamp, value in found:
            slot = int(stamp // self.metrics_seconds)
            distribution = self._emf.setdefault((key, slot), Distribution())
            _add_value(distribution, value)

    def _flush_metrics(self, *, final: bool) -> None:
        now = time.time()
        data: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        with self._lock:
            windows = self._windows
            self._windows = {
                name: _ServiceWindow(in_flight=w.in_flight, max_in_flight=w.in_flight)
                for name, w in windows.items()
            }
        for name, window in windows.items():
            service = self._services.get(name)
            if service is None:
                continue
            self._service_metrics(service, window, now, data)
        current_slot = int(now // self.metrics_seconds)
        for (key, slot), distribution in list(self._emf.items()):
            if slot >= current_slot and not final:
                continue  # still filling
            del self._emf[(key, slot)]
            namespace, name, dims, unit = key
            stamp = slot * self.metrics_seconds
            data[namespace].append(_datum(name, dims, unit, stamp, distribution.statistic_set()))
            if unit in TIME_UNITS:
                self._percentiles(data, namespace, name, dims, unit, stamp, distribution)
        for namespace, items in data.items():
            for start in range(0, len(items), _MAX_METRICS_PER_CALL):
                try:
                    self._cloudwatch.put_metric_data(
                        Namespace=namespace, MetricData=items[start : start + _MAX_METRICS_PER_CALL]
                    )
                    self.metric_calls += 1
                except (ClientError, BotoCoreError) as exc:
                    self._warn(f"PutMetricData ({namespace}) failed: {exc}")

    def _percentiles(
        self,
        data: dict[str, list[dict[str, Any]]],
        namespace: str,
        name: str,
        dims: tuple[tuple[str, str], ...],
        unit: str | None,
        stamp: float,
        distribution: Distribution,
    ) -> None:
        for p in PERCENTILES:
            value = distribution.percentile(p)
            if value is None:
                continue
            extended = (*dims, ("SourceNamespace", namespace), ("Statistic", f"p{p}"))
            data[self.percentiles_namespace].append(_datum(name, extended, unit, stamp, value))

    def _service_metrics(
        self,
        service: Service,
        window: _ServiceWindow,
        now: float,
        data: dict[str, list[dict[str, Any]]],
    ) -> None:
        if self.ecs:
            self._ecs_metrics(service, window, now, data)
            return
        dims = (("ServiceName", service.name), ("ServiceID", service.id))
        out = data[APPRUNNER_NAMESPACE]
        out.append(_datum("Requests", dims, "Count", now, float(window.requests)))
        for status in ("2xx", "4xx", "5xx"):
            out.append(
                _datum(
                    f"{status}StatusResponses", dims, "Count", now, float(window.by_class[status])
                )
            )
        if window.latency.count:
            out.append(
                _datum("RequestLatency", dims, "Milliseconds", now, window.latency.statistic_set())
            )
            self._percentiles(
                data,
                APPRUNNER_NAMESPACE,
                "RequestLatency",
                dims,
                "Milliseconds",
                now,
                window.latency,
            )
        out.append(_datum("Concurrency", dims, "Count", now, float(window.max_in_flight)))
        instance = service.routable_instance()
        out.append(_datum("ActiveInstances", dims, "Count", now, 1.0 if instance else 0.0))
        self._usage(service, dims, now, out)

    def _usage(
        self,
        service: Service,
        dims: tuple[tuple[str, str], ...],
        now: float,
        out: list[dict[str, Any]],
    ) -> None:
        """CPUUtilization and MemoryUtilization of the instance's process group."""
        instance = service.routable_instance()
        pgid = instance.pid if instance is not None else None
        if pgid is None:
            return
        usage = process_group_usage(pgid)
        if usage is None:
            return
        cpu_seconds, rss = usage
        previous = self._cpu_seen.get(pgid)
        self._cpu_seen[pgid] = (cpu_seconds, now)
        if previous is not None and now > previous[1]:
            busy = (cpu_seconds - previous[0]) / (now - previous[1]) / _VCPUS * 100.0
            out.append(_datum("CPUUtilization", dims, "Percent", now, max(0.0, min(100.0, busy))))
        out.append(
            _datum(
                "MemoryUtilization", dims, "Percent", now, min(100.0, 100.0 * rss / _MEMORY_BYTES)
            )
        )

    def _ecs_metrics(
        self,
        service: Service,
        window: _ServiceWindow,
        now: float,
        data: dict[str, list[dict[str, Any]]],
    ) -> None:
        """The same window as an ECS Express service and its load balancer report it."""
        balancer = service.ecs_load_balancer.split(":loadbalancer/", 1)[1]
        group = service.ecs_target_group.split(":", 5)[5]
        dims = (("LoadBalancer", balancer), ("TargetGroup", group))
        out = data[ALB_NAMESPACE]
        out.append(_datum("RequestCount", dims, "Count", now, float(window.requests)))
        for status in ("2xx", "4xx", "5xx"):
            name = f"HTTPCode_Target_{status.upper()}_Count"
            out.append(_datum(name, dims, "Count", now, float(window.by_class[status])))
        if window.latency.count:
            seconds = Distribution()
            if window.latency.raw_complete:
                for value in window.latency.values:
                    seconds.add(value / 1000.0)
            else:
                stats = window.latency.statistic_set()
                seconds.add_set(
                    count=stats["SampleCount"],
                    total=stats["Sum"] / 1000.0,
                    minimum=stats["Minimum"] / 1000.0,
                    maximum=stats["Maximum"] / 1000.0,
                )
            out.append(_datum("TargetResponseTime", dims, "Seconds", now, seconds.statistic_set()))
            self._percentiles(
                data, ALB_NAMESPACE, "TargetResponseTime", dims, "Seconds", now, seconds
            )
        instance = service.routable_instance()
        out.append(_datum("HealthyHostCount", dims, "Count", now, 1.0 if instance else 0.0))
        ecs_dims = (("ClusterName", ECS_CLUSTER), ("ServiceName", service.name))
        self._usage(service, ecs_dims, now, data[ECS_NAMESPACE])


def _datum(
    name: str,
    dims: Iterable[tuple[str, str]],
    unit: str | None,
    stamp: float,
    value: float | Mapping[str, float],
) -> dict[str, Any]:
    datum: dict[str, Any] = {
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
        "Timestamp": dt.datetime.fromtimestamp(stamp, tz=dt.UTC),
    }
    if unit:
        datum["Unit"] = unit
    if isinstance(value, Mapping):
        datum["StatisticValues"] = dict(value)
    else:
        datum["Value"] = value
    return datum


def _chunks(records: list[LogRecord]) -> Iterable[list[LogRecord]]:
    """PutLogEvents batches: at most 10,000 events, ~1 MB, and 24 hours."""
    chunk: list[LogRecord] = []
    size = 0
    for record in records:
        length = len(record.message.encode("utf-8")) + _EVENT_OVERHEAD
        too_long = chunk and record.timestamp - chunk[0].timestamp > 23 * 3600
        if chunk and (
            len(chunk) >= _MAX_BATCH_EVENTS or size + length > _MAX_BATCH_BYTES or too_long
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += length
    if chunk:
        yield chunk
