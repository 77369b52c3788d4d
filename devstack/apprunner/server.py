"""Runs the API and one proxy per service in a single event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import uvicorn

from devstack.apprunner.api import AppRunnerApi, service_model
from devstack.apprunner.config import StandInConfig
from devstack.apprunner.ecs_api import EcsExpressApi
from devstack.apprunner.logsink import ConsoleSink, FanOutSink, FileSink, LogSink
from devstack.apprunner.observability import CloudWatchShipper
from devstack.apprunner.proxy import ServiceProxy
from devstack.apprunner.service import Service

logger = logging.getLogger(__name__)

# True in every task the stand-in starts (they copy the context of ``start``).
_in_stand_in: ContextVar[bool] = ContextVar("in_apprunner_stand_in", default=False)


class _DemoteInfoToDebug(logging.Filter):
    """Turns a third-party logger's INFO records from inside the stand-in into DEBUG.

    uvicorn logs its life cycle once per server ("Started server process",
    "Shutting down", ...: one line per service plus one for the API) and httpx
    one line per request (every health probe and every proxied request). The
    stand-in logs its own start and stop once; these stay available at DEBUG.
    Records from other code in the same process (another uvicorn app in a test
    run, say) are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _in_stand_in.get():
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_DEMOTE = _DemoteInfoToDebug()
_NOISY_LOGGERS = ("uvicorn.error", "httpx")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the stand-in (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only
    # when the socket's proto is IPPROTO_TCP. With proto 0 Nagle held the body
    # of every proxied response (sent after its headers) until the client's
    # delayed ACK: ~44 ms per request on a kept-alive connection instead of ~1 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port} for {what}: {exc.strerror}"
        ) from exc
    sock.set_inheritable(False)
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@dataclass
class StandIn:
    """The App Runner stand-in: ``start`` binds and launches, ``stop`` tears down.

    Both must run on the same event loop; ``endpoint_url`` and the services'
    ``url`` are known once ``start`` has returned.
    """

    config: StandInConfig
    host: str = "127.0.0.1"
    port: int = 5100
    extra_sinks: Iterable[LogSink] = ()
    # Ships logs and metrics to CloudWatch as App Runner does (observability.py).
    shipper: CloudWatchShipper | None = None
    services: list[Service] = field(default_factory=list)
    endpoint_url: str = ""
    _sink: LogSink | None = None
    _servers: list[tuple[_EmbeddedServer, asyncio.Task[None]]] = field(default_factory=list)

    async def start(self) -> None:
        """Bind every port, start serving, and begin creating each service.

        Returns without waiting for the services to become healthy. Raises
        OSError when a port is taken (nothing is left running then).
        """
        for name in _NOISY_LOGGERS:
            if _DEMOTE not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_DEMOTE)
        token = _in_stand_in.set(True)
        try:
            await self._start()
        finally:
            _in_stand_in.reset(token)

    async def _start(self) -> None:
        config = self.config
        shipped: list[LogSink] = [self.shipper] if self.shipper is not None else []
        self._sink = FanOutSink(
            [ConsoleSink(), FileSink(config.state_dir / "logs"), *self.extra_sinks, *shipped]
        )
        service_model()  # load botocore's model now, not on the first request
        sockets: list[socket.socket] = []
        try:
            api_socket = _bind(self.host, self.port, "the App Runner API")
            sockets.append(api_socket)
            for service_config in config.services:
                sockets.append(
                    _bind(self.host, service_config.port, f"service {service_config.name}")
                )
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self.endpoint_url = f"http://{_url_host(self.host)}:{api_socket.getsockname()[1]}"
        for service_config, sock in zip(config.services, sockets[1:], strict=True):
            service = Service(
                service_config,
                region=config.region,
                account_id=config.account_id,
                state_dir=config.state_dir,
                sink=self._sink,
            )
            service.url = f"{_url_host(self.host)}:{sock.getsockname()[1]}"
            self.services.append(service)
        api = AppRunnerApi({s.arn: s for s in self.services}, ecs=EcsExpressApi(self.services))
        self._serve(api.app(), api_socket)
        for service, sock in zip(self.services, sockets[1:], strict=True):
            self._serve(ServiceProxy(service, observer=self.shipper), sock)
        # Let the servers call listen() before anyone is told the URLs.
        while not all(server.started for server, _ in self._servers):
            for _server, task in self._servers:
                if task.done():
                    raise RuntimeError("an HTTP server of the stand-in failed to start")
            await asyncio.sleep(0.01)
        if self.shipper is not None:
            self.shipper.start(self.services)
        logger.info("App Runner stand-in started (process %d)", os.getpid())
        logger.info("App Runner API listening on %s", self.endpoint_url)
        for service in self.services:
            logger.info("service %s: %s at http://%s", service.name, service.arn, service.url)
            service.create()

    def _serve(self, app: object, sock: socket.socket) -> None:
        server = _EmbeddedServer(
            uvicorn.Config(
                app,  # type: ignore[arg-type]
                lifespan="off",
                ws="none",
                log_config=None,
                access_log=False,
                server_header=False,
                proxy_headers=False,  # the peer address is the real client's
                date_header=False,
                timeout_graceful_shutdown=3,
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        self._servers.append((server, task))

    async def stop(self) -> None:
        """Stop every instance (SIGTERM, then SIGKILL) and every server; returns when done."""
        for server, _task in self._servers:
            server.should_exit = True
        await asyncio.gather(*(service.stop() for service in self.services))
        await asyncio.gather(*(task for _server, task in self._servers), return_exceptions=True)
        if self._sink is not None:
            self._sink.close()
        logger.info("App Runner stand-in stopped")


@dataclass(frozen=True)
class RunningStandIn:
    """What a test needs to reach a stand-in running in a background thread."""

    endpoint_url: str  # the App Runner API, e.g. http://127.0.0.1:40123
    service_urls: dict[str, str]  # service name -> http://127.0.0.1:<port>
    service_arns: dict[str, str]  # service name -> ARN
    # service name -> the same service's ECS Express ARN (ecs_api.py; same endpoint)
    ecs_service_arns: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def run_in_background(
    config: StandInConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_sinks: Iterable[LogSink] = (),
    shipper: CloudWatchShipper | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[RunningStandIn]:
    """Run the stand-in in a thread with its own event loop; stop it on exit.

    Service ports of 0 in ``config`` (and ``port=0`` for the API) get free
    ports. On exit every instance has been stopped and reaped.
    """
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        stand_in = StandIn(config, host=host, port=port, extra_sinks=extra_sinks, shipper=shipper)
        stop_event = asyncio.Event()
        holder["loop"] = asyncio.get_running_loop()
        holder["stop"] = stop_event
        try:
            await stand_in.start()
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            await stand_in.stop()
            return
        holder["running"] = RunningStandIn(
            endpoint_url=stand_in.endpoint_url,
            service_urls={s.name: f"http://{s.url}" for s in stand_in.services},
            service_arns={s.name: s.arn for s in stand_in.services},
            ecs_service_arns={s.name: s.ecs_arn for s in stand_in.services},
        )
        ready.set()
        try:
            await stop_event.wait()
        finally:
            await stand_in.stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            holder.setdefault("error", exc)
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="apprunner-stand-in", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout):
        raise TimeoutError(f"the App Runner stand-in did not start within {startup_timeout} s")
    try:
        error = holder.get("error")
        if isinstance(error, BaseException):
            raise RuntimeError(f"the App Runner stand-in failed to start: {error}") from error
        running = holder["running"]
        assert isinstance(running, RunningStandIn)
        yield running
    finally:
        loop = holder.get("loop")
        stop_event = holder.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop_event, asyncio.Event):
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                loop.call_soon_threadsafe(stop_event.set)
        thread.join()
