"""The real processes the registry and upload benchmarks measure, on free ports.

A ``Stack`` owns a temporary state directory and starts, on demand: a private
Redis (Celery's broker and Django's cache), the embedded AWS (moto's server,
``python -m devstack.embedded_aws``) with the models bucket bootstrapped, the
dashboard's database (``manage.py migrate``) and the dashboard itself under
gunicorn. Everything listens on 127.0.0.1 only. ``stop()`` ends exactly the
processes it started (their process groups), newest first.

Django work the benchmarks need done inside the dashboard's code (seeding rows,
timing ``registry_sync()``) runs in a child process through
``bench/_registry_django.py``, so the benchmark process itself never imports
Django settings: ``python -m bench`` runs several benchmarks in one interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BUCKET = "modeldeck-models"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 500)
    except Exception:
        return False


def ensure_debian_package(command: str, package: str) -> bool:
    """Install ``package`` with apt-get when ``command`` is missing, as the
    Makefile's system-deps and browser-deps targets do; return whether the
    command is there afterwards."""
    if shutil.which(command):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"installing {package} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], env=env, check=False, capture_output=True
    )
    return shutil.which(command) is not None


def read_proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in bytes, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's VmHWM of ``pid`` to its current RSS (clear_refs 5);
    return False where the kernel or permissions refuse."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()


@dataclass
class Stack:
    """Processes of one benchmark, under a temporary state directory."""

    prefix: str = "modeldeck-bench-"
    extra_env: dict[str, str] = field(default_factory=dict)
    root: Path = field(init=False)
    services: list[Service] = field(default_factory=list, init=False)
    env: dict[str, str] = field(default_factory=dict, init=False)
    aws_url: str = field(default="", init=False)
    dashboard_url: str = field(default="", init=False)
    urls: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DJANGO_"))}
        keep.pop("DATABASE_URL", None)
        self.env = {
            **keep,
            "MODELDECK_STATE_DIR": str(self.root),
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "DATABASE_URL": f"sqlite:///{self.root / 'dashboard.sqlite3'}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_S3_ADDRESSING_STYLE": "path",
            "MODELS_BUCKET": BUCKET,
            # What a deployment runs with: no per-query bookkeeping of DEBUG,
            # and the logs of a few thousand requests kept off the console.
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    # --- processes -------------------------------------------------------------

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        log = self.root / f"{name}.log"
        popen = subprocess.Popen(
            command,
            cwd=cwd or REPO,
            env=env or self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        service = Service(name, popen, log)
        self.services.append(service)
        return service

    def wait(self, service: Service, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if service.popen.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.popen.returncode}:\n{service.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not answer in {timeout:.0f} s")
            time.sleep(0.1)

    def start_redis(self) -> None:
        if not ensure_debian_package("redis-server", "redis-server"):
            raise RuntimeError("redis-server is missing and could not be installed")
        port = free_port()
        redis = self.start(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        self.wait(redis, lambda: port_open(port), 20)
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

    def start_aws(self, *, cors_origin: str) -> None:
        """moto's server with the models bucket set up as the contract says."""
        port = free_port()
        aws = self.start(
            "aws",
            [
                PYTHON,
                "-m",
                "devstack.embedded_aws",
                "--port",
                str(port),
                "--bucket",
                BUCKET,
                "--cors-origin",
                cors_origin,
                "--region",
                REGION,
            ],
        )
        self.aws_url = f"http://127.0.0.1:{port}"
        self.env["AWS_ENDPOINT_URL"] = self.aws_url
        self.wait(aws, lambda: port_open(port) and self._bucket_ready(), 60)

    def _bucket_ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3().head_bucket(Bucket=BUCKET)
        except (BotoCoreError, ClientError):
            return False
        return True

    def s3(self) -> Any:
        """A boto3 S3 client for the embedded AWS (boto3's defaults otherwise)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.aws_url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
        )

    def migrate(self, env: dict[str, str] | None = None) -> None:
        subprocess.run(
            [PYTHON, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**self.env, **(env or {})},
            check=True,
        )

    def django(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
        """Run ``bench/_registry_django.py ARGS`` with the dashboard's settings
        (``env`` overrides the stack's environment); return the JSON it prints
        on its last line."""
        result = subprocess.run(
            [PYTHON, str(REPO / "bench" / "_registry_django.py"), *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"_registry_django.py {' '.join(args)} failed:\n{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start_dashboard(
        self,
        *,
        workers: int = 1,
        threads: int = 4,
        name: str = "web",
        env: dict[str, str] | None = None,
    ) -> Service:
        """gunicorn serving dashboard.wsgi, as the local stack runs it. With
        ``env`` (overrides, e.g. another DATABASE_URL), a second dashboard on
        a free port; its URL is ``self.urls[name]``."""
        if env is None:
            port = int(self.env.get("MODELDECK_DASHBOARD_PORT") or free_port())
        else:
            port = free_port()
        web = self.start(
            name,
            [
                PYTHON,
                "-m",
                "gunicorn",
                "dashboard.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--graceful-timeout",
                "5",
                "--timeout",
                "300",
            ],
            env={**self.env, **env} if env is not None else None,
        )
        url = f"http://127.0.0.1:{port}"
        self.urls[name] = url
        if env is None:
            self.dashboard_url = url
        self.wait(web, lambda: http_ok(url + "/healthz"), 60)
        return web

    def worker_pids(self, web: Service) -> list[int]:
        """The gunicorn worker processes under the master ``web``."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = child_pids(web.pid)
            if pids:
                return pids
            time.sleep(0.1)
        raise RuntimeError("gunicorn started no worker")

    def service(self, name: str) -> Service:
        """The running process started as ``name``."""
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
