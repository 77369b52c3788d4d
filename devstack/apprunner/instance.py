"""One instance of a service: the service's command running as a process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import BinaryIO

import httpx

from devstack.apprunner.logsink import LogRecord, LogSink, Stream

# Longer lines are split: one runaway line must not eat the stand-in's memory.
_MAX_LINE_BYTES = 64 * 1024
_KEPT_LINES = 20
_PROBE_TIMEOUT_SECONDS = 5.0
_ORPHAN_GUARD = Path(__file__).with_name("orphan_guard.py")
# PR_SET_PDEATHSIG, which the guard relies on, is Linux only.
_GUARDED = sys.platform == "linux"
# Where an instance listens unless its service's env says otherwise: App Runner
# is the only way in, so a local instance has no business on other interfaces.
DEFAULT_INSTANCE_HOST = "127.0.0.1"


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client of the stand-in. Instances speak plain
    HTTP on loopback, but an httpx client builds a context (loading the CA
    bundle, ~20 ms of CPU) unless given one: two per deployment, on the one
    event loop every service shares."""
    return ssl.create_default_context()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Instance:
    """A process running a service's command, with ``PORT`` set to its own port.

    The process starts a new session, so it and everything it forks form one
    process group that ``stop`` signals as a whole: no orphans survive it.
    On Linux the group is led by ``orphan_guard.py``, which stops the group
    (SIGTERM, SIGKILL after ``orphan_grace`` seconds) if the stand-in itself
    dies without stopping it. All methods must be called on the stand-in's
    event loop.
    """

    def __init__(
        self,
        *,
        service: str,
        service_arn: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        sink: LogSink,
        orphan_grace: float = 10.0,
    ) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.port = 0
        self._service = service
        self._service_arn = service_arn
        self._command = tuple(command)
        self._env = dict(env)
        self._cwd = cwd
        self._sink = sink
        self._orphan_grace = orphan_grace
        self._process: asyncio.subprocess.Process | None = None
        self._exited = asyncio.Event()
        self._stopping = False
        self._never_ran = False  # the guard could not execute the command
        # Set once ``start`` knows whether the command runs: until then an exit
        # of the process is not yet news (it may be the guard failing to exec).
        self._launched = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_lines: deque[str] = deque(maxlen=_KEPT_LINES)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Spawn the process on a fresh port.

        Raises OSError when the command cannot be executed.
        """
        self.port = free_port()
        env = {
            **os.environ,
            "HOST": DEFAULT_INSTANCE_HOST,
            **self._env,
            "PORT": str(self.port),
        }
        try:
            if _GUARDED:
                await self._start_guarded(env)
            else:
                self._begin(await self._spawn(self._command, env))
                self._announce(self.pid)
                self._pump_output()
        finally:
            self._launched.set()

    async def _start_guarded(self, env: Mapping[str, str]) -> None:
        # The guard reports on a pipe whether it could execute the command, so
        # a missing program is still an OSError here rather than an exit later.
        status_read, status_write = os.pipe()
        with open(status_read, "rb", buffering=0) as status:
            try:
                process = await self._spawn(
                    [
                        sys.executable,
                        "-I",
                        "-S",
                        str(_ORPHAN_GUARD),
                        str(os.getpid()),
                        f"{self._orphan_grace:g}",
                        str(status_write),
                        "--",
                        *self._command,
                    ],
                    env,
                    pass_fds=(status_write,),
                )
            finally:
                os.close(status_write)
            # Watched from here on, so that a stop while the report is awaited
            # finds a process it can signal and a watcher that notices its exit.
            self._begin(process)
            report = (await _read_pipe(status)).decode("utf-8", "surrogateescape")
        outcome, _, detail = report.partition(" ")
        if outcome == "started":
            # Output is read from now on, so the log says "started" before the
            # instance's first line.
            self._announce(int(detail))
            self._pump_output()
            return
        self._pump_output()
        self._stopping = self._never_ran = True  # the OSError below says it all
        await self._exited.wait()
        if outcome != "failed":  # the guard died before running the command
            raise OSError(f"the orphan guard exited with code {self.returncode}")
        errno, message, filename = detail.split("\n", 2)
        raise OSError(int(errno), message, filename or None)

    async def _spawn(
        self, argv: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()
    ) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=self._cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=pass_fds,
        )

    def _begin(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._tasks = [asyncio.create_task(self._watch())]
        self._client = httpx.AsyncClient(
            trust_env=False,
            verify=_tls(),
            timeout=httpx.Timeout(connect=5.0, read=300.0, write=300.0, pool=30.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    def _pump_output(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None and self._process.stderr is not None
        self._tasks += [
            asyncio.create_task(self._pump(self._process.stdout, "stdout")),
            asyncio.create_task(self._pump(self._process.stderr, "stderr")),
        ]

    def _announce(self, command_pid: int | None) -> None:
        self.event(f"instance {self.id} started: pid {command_pid}, port {self.port}")

    @property
    def pid(self) -> int | None:
        """The process group id (its leader's pid), None before ``start``.

        On Linux the leader is the orphan guard, which runs the command as its child.
        """
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._process is not None and not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal)."""
        return self._process.returncode if self._exited.is_set() and self._process else None

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client the proxy forwards requests with."""
        if self._client is None:
            raise RuntimeError(f"instance {self.id} is not started")
        return self._client

    def last_lines(self) -> list[str]:
        """Return the instance's last output lines, oldest first."""
        return list(self._last_lines)

    async def wait_healthy(self, *, path: str, timeout: float, interval: float) -> str | None:
        """Poll ``GET <path>`` until it answers 200.

        Returns None once healthy, else the reason it never got there: the
        process exited (noticed at once), or ``timeout`` seconds passed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        url = f"http://127.0.0.1:{self.port}{path}"
        last = "no answer yet"
        async with httpx.AsyncClient(trust_env=False, verify=_tls()) as client:
            while True:
                if not self.running:
                    return (
                        f"instance {self.id} exited with code {self.returncode} "
                        "before becoming healthy"
                    )
                remaining = deadline - loop.time()
                try:
                    response = await client.get(
                        url, timeout=max(0.1, min(_PROBE_TIMEOUT_SECONDS, remaining))
                    )
                except httpx.HTTPError as exc:
                    last = f"GET {path}: {type(exc).__name__}"
                else:
                    if response.status_code == 200:
                        return None
                    body = " ".join(response.text.split())[:200]
                    last = f"GET {path} answered {response.status_code} {body}".rstrip()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return f"instance {self.id} not healthy after {timeout:g} s (last: {last})"
                with contextlib.suppress(TimeoutError):
                    # Wake early if the process dies, so a crash fails at once.
                    await asyncio.wait_for(self._exited.wait(), min(interval, remaining))

    @contextlib.contextmanager
    def track_request(self) -> Iterator[None]:
        """Count a proxied request as in flight for as long as the block runs."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no proxied request is in flight; return False if ``timeout`` ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; idempotent.

        Returns once the process has exited and any members of its group left
        behind have been killed.
        """
        async with self._stop_lock:
            self._stopping = True
            if self._process is None:
                return
            if not self._exited.is_set():
                self._signal_group(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self._exited.wait(), grace)
                except TimeoutError:
                    self.event(f"instance {self.id} ignored SIGTERM for {grace:g} s; killing it")
                    self._signal_group(signal.SIGKILL)
                    await self._exited.wait()
            # Children that outlived the leader would otherwise be orphans.
            self._signal_group(signal.SIGKILL)
            _done, pending = await asyncio.wait(self._tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            if self._client is not None:
                await self._client.aclose()

    # -- internals ----------------------------------------------------------

    def event(self, message: str) -> None:
        """Log a service event about this instance."""
        self._sink.emit(
            LogRecord(
                timestamp=time.time(),
                service=self._service,
                service_arn=self._service_arn,
                instance_id=None,
                stream="service",
                message=message,
            )
        )

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    async def _pump(self, reader: asyncio.StreamReader, stream: Stream) -> None:
        pending = b""
        while chunk := await reader.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._line(line, stream)
            while len(pending) > _MAX_LINE_BYTES:
                self._line(pending[:_MAX_LINE_BYTES], stream)
                pending = pending[_MAX_LINE_BYTES:]
        if pending:
            self._line(pending, stream)

    def _line(self, raw: bytes, stream: Stream) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._last_lines.append(text)
        self._sink.emit(
            LogRecord(
                timestamp=time.time(),
                service=self._service,
                service_arn=self._service_arn,
                instance_id=self.id,
                stream=stream,
                message=text,
            )
        )

    async def _watch(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        self._exited.set()
        await self._launched.wait()
        if self._stopping:
            if not self._never_ran:
                self.event(f"instance {self.id} stopped (exit code {code})")
        else:
            self.event(f"instance {self.id} exited unexpectedly with code {code}")
            self._signal_group(signal.SIGKILL)


async def _read_pipe(pipe: BinaryIO) -> bytes:
    """Return everything written to ``pipe`` until its last writer closes it."""
    reader = asyncio.StreamReader()
    transport, _protocol = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe
    )
    try:
        return await reader.read()
    finally:
        transport.close()
