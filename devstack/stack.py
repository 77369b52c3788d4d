"""The local stack: every process of the product on one machine.

Starts, in order, waiting for each to answer before the next:
Redis (unless one already answers at REDIS_URL), the embedded AWS (moto's
server), the seed (bucket, demo model, pointers, users), the App Runner
stand-in with one service per environment (each starts an inference
instance), then the dashboard (gunicorn), a Celery worker and Celery beat.
Ctrl-C (or SIGTERM) stops them all, newest first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COLORS = ["36", "33", "35", "32", "34", "31", "96", "93", "95"]


@dataclass(frozen=True)
class Ports:
    """Local ports; each can be moved with MODELDECK_<NAME>_PORT (tests do)."""

    dashboard: int = 8000
    aws: int = 5000
    apprunner: int = 5100
    production: int = 8080
    staging: int = 8081

    @classmethod
    def from_env(cls) -> Ports:
        values = {}
        for name in ("dashboard", "aws", "apprunner", "production", "staging"):
            raw = os.environ.get(f"MODELDECK_{name.upper()}_PORT")
            if raw:
                values[name] = int(raw)
        return cls(**values)


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Variables it must not inherit (from the environment or ``env``).
    unset: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] | None = None
    # Restarted when it dies, as a container restart policy would: the
    # dashboard's processes keep no state a restart loses.
    restart: bool = False
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    color: str = ""


AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def celery_worker(queues: str, concurrency: int) -> list[str]:
    """The command line of a Celery worker of the dashboard for ``queues``."""
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "dashboard",
        "worker",
        "--queues",
        queues,
        "--hostname",
        f"{queues.split(',')[0]}@%h",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
    ]


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Starts processes in their own process groups, prefixes their output,
    and stops them all (group-wide SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.processes: list[Process] = []
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()

    def say(self, name: str, line: str, color: str = "1") -> None:
        with self._print_lock:
            sys.stdout.write(f"\x1b[{color}m{name:>10} |\x1b[0m {line}\n")
            sys.stdout.flush()

    def start(self, process: Process) -> Process:
        if not process.color:
            process.color = COLORS[len(self.processes) % len(COLORS)]
        color = process.color
        env = {**os.environ, **process.env, "PYTHONUNBUFFERED": "1"}
        for name in process.unset:
            env.pop(name, None)
        process.popen = subprocess.Popen(
            process.command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        process.started_at = time.monotonic()
        if process not in self.processes:
            self.processes.append(process)

        def pump() -> None:
            assert process.popen is not None and process.popen.stdout is not None
            for raw in process.popen.stdout:
                self.say(process.name, raw.decode(errors="replace").rstrip(), color)

        threading.Thread(target=pump, daemon=True).start()
        return process

    def run_once(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Run a setup step to completion; raise SystemExit if it fails."""
        process = self.start(Process(name, command, env))
        assert process.popen is not None
        code = process.popen.wait()
        self.processes.remove(process)
        if code != 0:
            raise SystemExit(f"{name} failed with exit code {code}")

    def wait_until(self, process: Process, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if process.popen is not None and process.popen.poll() is not None:
                raise SystemExit(f"{process.name} exited with code {process.popen.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{process.name} did not come up within {timeout:.0f} s")
            if self.stopping.is_set():
                raise SystemExit(1)
            time.sleep(0.2)

    def stop_all(self) -> None:
        self.stopping.set()
        for process in reversed(self.processes):
            if process.popen is not None and process.popen.poll() is None:
                try:
                    os.killpg(process.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for process in reversed(self.processes):
            if process.popen is None:
                continue
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.popen.wait()

    def watch(self) -> int:
        """Block until we are told to stop (return 0) or a process that cannot
        be restarted dies (return 1). Restartable processes that die are
        started again after a growing pause (1 s, 2 s, ... 30 s; back to 1 s
        once one has run for a minute), saying why."""
        while not self.stopping.is_set():
            now = time.monotonic()
            for process in self.processes:
                if process.restart_at is not None:
                    if now >= process.restart_at:
                        process.restart_at = None
                        self.say("stack", f"restarting {process.name}")
                        self.start(process)
                    continue
                if process.popen is None or process.popen.poll() is None:
                    continue
                how = exit_description(process.popen.returncode)
                if not process.restart:
                    self.say(
                        "stack",
                        f"{process.name} exited unexpectedly ({how}); the stack cannot work "
                        "without it, so everything stops now. Its last lines are above; "
                        "`make run` starts it all again (the database, the embedded AWS's "
                        "S3 and SSM, and the demo model are kept).",
                    )
                    return 1
                if now - process.started_at > 60:
                    process.restarts = 0
                delay = min(30.0, 2.0**process.restarts)
                process.restarts += 1
                process.restart_at = now + delay
                self.say(
                    "stack",
                    f"{process.name} exited unexpectedly ({how}); restarting it in {delay:.0f} s "
                    f"(restart #{process.restarts}; its last lines are above). Work it had "
                    "in hand is picked up again: deployments are steps recorded in the database.",
                )
            self.stopping.wait(0.5)
        return 0


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
                return bool(200 <= response.status < 500)
        except Exception:
            return False

    return check


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


def stack_env(ports: Ports, state_dir: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports.aws}",
        "AWS_ENDPOINT_URL_APPRUNNER": f"http://127.0.0.1:{ports.apprunner}",
        # The stand-in's ECS Express view of the same services (same port).
        "AWS_ENDPOINT_URL_ECS": f"http://127.0.0.1:{ports.apprunner}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        "MODELS_BUCKET": os.environ.get("MODELS_BUCKET", "modeldeck-models"),
        "MODELDECK_STATE_DIR": str(state_dir),
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        # Presigned URLs are opened by the browser: path style works on 127.0.0.1.
        "AWS_S3_ADDRESSING_STYLE": "path",
        # The stand-in deploys in seconds: look often (AWS: every 5 s).
        "DEPLOYMENT_POLL_SECONDS": os.environ.get("DEPLOYMENT_POLL_SECONDS", "1"),
        "DEPLOYMENT_RECONCILE_EVERY_SECONDS": os.environ.get(
            "DEPLOYMENT_RECONCILE_EVERY_SECONDS", "1"
        ),
        # moto computes no percentiles: the App Runner stand-in publishes them here.
        "CLOUDWATCH_PERCENTILES_NAMESPACE": "DevStack/Percentiles",
    }


def pointer_pins(env: dict[str, str]) -> dict[str, str]:
    """environment -> its pointer with SSM's version selector, as the seed left
    it: each service's first revision pins that exact pointer version (a
    revision that read the unversioned pointer would load whatever a
    deployment in flight had just written, on any restart)."""
    import boto3

    client = boto3.client(
        "ssm",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    pins = {}
    for name in ("production", "staging"):
        parameter = f"/models/iris/{name}"
        version = client.get_parameter(Name=parameter)["Parameter"]["Version"]
        pins[name] = f"{parameter}:{version}"
    return pins


def apprunner_config(
    ports: Ports, env: dict[str, str], state_dir: Path, pins: dict[str, str] | None = None
) -> dict[str, object]:
    services = []
    for name, port in (("production", ports.production), ("staging", ports.staging)):
        services.append(
            {
                "name": f"iris-{name}",
                "port": port,
                "command": [PYTHON, "-m", "inference"],
                "env": {
                    "MODEL_SSM_PARAMETER": (pins or {}).get(name, f"/models/iris/{name}"),
                    "MODEL_CACHE_DIR": str(state_dir / "model-cache"),
                    "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
                    "AWS_ACCESS_KEY_ID": "test",
                    "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_REGION": env["AWS_REGION"],
                    "TORCH_NUM_THREADS": "1",
                    # Tells the environments' inference metrics apart (docs/monitoring.md).
                    "EMF_DIMENSIONS": f"Environment={name}",
                    "HOST": "127.0.0.1",
                },
                "health_check_path": "/readyz",
                # App Runner gives up on an unhealthy deployment after minutes;
                # locally the demo model loads in about a second.
                "health_check_timeout_seconds": 60,
                "health_check_interval_seconds": 0.5,
            }
        )
    return {
        "region": env["AWS_REGION"],
        "account_id": "000000000000",
        "state_dir": str(state_dir / "apprunner"),
        "services": services,
    }


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by its owner only, and tighten
    an existing one: it holds the sign-in password, the database and logs."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def up(ports: Ports, state_dir: Path) -> int:
    private_dir(state_dir)
    supervisor = Supervisor()

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env = stack_env(ports, state_dir)
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    env["REDIS_URL"] = redis_url
    busy = [
        p
        for p in (ports.dashboard, ports.aws, ports.apprunner, ports.production, ports.staging)
        if port_open("127.0.0.1", p)
    ]
    if busy:
        print(f"ports already in use: {busy} (is another `make run` running?)", file=sys.stderr)
        return 1
    try:
        if redis_answers(redis_url):
            supervisor.say("stack", f"using the Redis at {redis_url}")
        else:
            parsed = urlparse(redis_url)
            if parsed.hostname not in {"127.0.0.1", "localhost"}:
                raise SystemExit(f"no Redis answers at {redis_url}")
            redis = supervisor.start(
                Process(
                    "redis",
                    [
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(parsed.port or 6379),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                )
            )
            supervisor.wait_until(redis, lambda: redis_answers(redis_url), 20)
        aws_state = state_dir / "aws-state.pickle"
        if not aws_state.exists():
            # App Runner revisions pin SSM parameter versions of the AWS they
            # were deployed in: a new embedded AWS starts them over too.
            for stale in (state_dir / "apprunner" / "services").glob("*.json"):
                stale.unlink()
        aws = supervisor.start(
            Process(
                "aws",
                [
                    PYTHON,
                    "-m",
                    "devstack.embedded_aws",
                    "--port",
                    str(ports.aws),
                    "--state-file",
                    str(aws_state),
                ],
                env,
            )
        )
        supervisor.wait_until(aws, lambda: port_open("127.0.0.1", ports.aws), 30)
        manage = [PYTHON, str(ROOT / "manage.py")]
        supervisor.run_once(
            "seed",
            [
                *manage,
                "devstack_seed",
                "--phase",
                "aws",
                "--migrate",
                "--cors-origin",
                f"http://127.0.0.1:{ports.dashboard}",
                "--cors-origin",
                f"http://localhost:{ports.dashboard}",
            ],
            env,
        )
        config_path = state_dir / "apprunner.json"
        config_path.write_text(
            json.dumps(apprunner_config(ports, env, state_dir, pointer_pins(env)), indent=2)
        )
        # Everything else starts at once; only linking the environments to
        # their App Runner services has to wait for the stand-in.
        runner = supervisor.start(
            Process(
                "apprunner",
                [
                    PYTHON,
                    "-m",
                    "devstack.apprunner",
                    "--config",
                    str(config_path),
                    "--port",
                    str(ports.apprunner),
                    # Logs and metrics to the embedded CloudWatch, as App Runner does
                    # (or as ECS and its load balancer do, for the ECS target).
                    "--cloudwatch",
                    *(
                        ["--ecs-names"]
                        if os.environ.get("MODELDECK_DEVSTACK_TARGET") == "ecs_express"
                        else []
                    ),
                ],
                env,
            )
        )
        web = supervisor.start(
            Process(
                "web",
                [
                    PYTHON,
                    "-m",
                    "gunicorn",
                    "dashboard.wsgi",
                    "--bind",
                    f"127.0.0.1:{ports.dashboard}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--graceful-timeout",
                    "5",
                ],
                env,
                restart=True,
            )
        )
        # Two workers, as production has (docker-compose.yml, docs/security.md):
        # deployment steps and the rest never wait behind a slow validation,
        # and the process that runs model files gets no AWS credentials (its
        # ticket carries a presigned URL; the answer goes back through Redis).
        supervisor.start(Process("worker", celery_worker("celery", 2), env, restart=True))
        supervisor.start(
            Process(
                "validator",
                celery_worker("validation", 1),
                env,
                unset=AWS_CREDENTIALS,
                restart=True,
            )
        )
        supervisor.start(
            Process(
                "beat",
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "dashboard",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(state_dir / "celerybeat-schedule"),
                ],
                env,
                restart=True,
            )
        )
        supervisor.wait_until(runner, lambda: port_open("127.0.0.1", ports.apprunner), 30)
        supervisor.run_once(
            "seed",
            [
                *manage,
                "devstack_seed",
                "--phase",
                "services",
                "--service-url",
                f"production=http://127.0.0.1:{ports.production}",
                "--service-url",
                f"staging=http://127.0.0.1:{ports.staging}",
            ],
            env,
        )
        supervisor.wait_until(web, http_ok(f"http://127.0.0.1:{ports.dashboard}/healthz"), 60)
        credentials = (state_dir / "credentials.txt").read_text().strip()
        banner = [
            "",
            "ModelDeck is up.",
            f"  dashboard      http://127.0.0.1:{ports.dashboard}   ({credentials})",
            f"  API            http://127.0.0.1:{ports.dashboard}/api/docs",
            f"  staging        http://127.0.0.1:{ports.staging}   (inference, App Runner stand-in)",
            f"  production     http://127.0.0.1:{ports.production}",
            f"  embedded AWS   http://127.0.0.1:{ports.aws}   (S3, SSM, CloudWatch, Logs)",
            f"  App Runner API http://127.0.0.1:{ports.apprunner}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        for line in banner:
            supervisor.say("stack", line)
        return supervisor.watch()
    except SystemExit as exc:
        if exc.code not in (None, 0, 1):
            supervisor.say("stack", f"error: {exc.code}")
        return 1
    finally:
        supervisor.say("stack", "stopping...")
        supervisor.stop_all()
        supervisor.say("stack", "stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up"], nargs="?", default="up")
    parser.add_argument(
        "--state-dir", default=os.environ.get("MODELDECK_STATE_DIR", str(ROOT / ".devstack"))
    )
    args = parser.parse_args(argv)
    return up(Ports.from_env(), Path(args.state_dir))
