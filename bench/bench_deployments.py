"""Benchmark of deployments; writes the "## Deployments" section of docs/benchmarks.md.

    .venv/bin/python bench/bench_deployments.py [--quick] [--promotes 5] [--fleet 50]
                                                [--page-environments 20] [--no-write]

On this machine, 127.0.0.1 only, the local stack's processes as `make run`
starts them, on free ports: a private Redis (Celery's broker and Django's
cache), the embedded AWS (moto's server), the App Runner stand-in, the
dashboard under gunicorn (2 workers, 4 threads), one Celery worker at its
default concurrency (one pool process per CPU) and Celery beat, with the local
stack's deployment timing (DEPLOYMENT_POLL_SECONDS=1,
DEPLOYMENT_RECONCILE_EVERY_SECONDS=1). The dashboard's SSM calls go through a
counting proxy, so every call is seen at the network edge.

The stand-in runs ``iris-staging`` with the real inference service (PyTorch)
and ``--fleet`` services ``iris-bench-NN`` with the light instance
(devstack/apprunner/light_instance.py: reads its pinned pointer from SSM,
answers /readyz and /version, loads no model), each an environment of iris.

1. Promote -> live, minus the instance's own cold start: ``--promotes`` promotes
   of iris-staging through the API (a token), each from the POST to the
   deployment's ``finished_at`` (succeeded), minus the time the new instance
   took from its start to passing the health check (/readyz), read from the
   stand-in's own log for that very deployment.
2. ``--fleet`` environments deploying at once: the time from the first POST
   until the last deployment succeeded, against one environment deploying
   alone (median of 3), same light instances, same worker.
3. The models page (/models/) with ``--page-environments`` environments:
   page views per second (4 clients, signed in) against the same page with
   one environment, and the SSM calls per view (counted at the proxy), with
   the environments' live checks cached (ENVIRONMENT_STATE_CACHE_SECONDS) and
   with the cache emptied before each view.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._registry_doc import write_subsection  # noqa: E402
from bench._registry_stack import (  # noqa: E402
    PYTHON,
    REGION,
    Stack,
    child_pids,
    free_port,
    port_open,
)
from bench.bench_monitoring import CountingProxy, table  # noqa: E402
from bench.bench_registry import (  # noqa: E402
    drop_postgres_database,
    postgres_admin_url,
    postgres_database,
)

DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Deployments"
SUBSECTION = "Promote, many environments, models page (bench_deployments.py)"
MODEL = "iris"
PG_DATABASE = "modeldeck_bench_deployments"
LIGHT = REPO / "devstack" / "apprunner" / "light_instance.py"
FINAL = {"succeeded", "failed", "rolled_back", "rejected", "expired"}
PAGE_CLIENTS = 4
# The local stack's deployment timing (devstack/stack.py: stack_env).
TIMING = {"DEPLOYMENT_POLL_SECONDS": "1", "DEPLOYMENT_RECONCILE_EVERY_SECONDS": "1"}


def fleet_name(i: int) -> str:
    return f"bench-{i:02d}"


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the stack -----------------------------------------------------------------------------


class DeployStack:
    """The local stack's processes for this benchmark (see the module docstring)."""

    def __init__(
        self, *, fleet: int, concurrency: int | None = None, database_url: str = ""
    ) -> None:
        self.fleet = fleet
        self.concurrency = concurrency
        extra = dict(TIMING)
        if database_url:
            extra["DATABASE_URL"] = database_url
        self.stack = Stack(prefix="modeldeck-bench-deployments-", extra_env=extra)
        self.proxy: CountingProxy | None = None
        self.api = ""
        self.token = ""
        self.password = secrets.token_urlsafe(12)
        self.services: dict[str, dict[str, str]] = {}  # service name -> arn, url

    # process life cycle

    def start(self) -> None:
        stack = self.stack
        stack.start_redis()
        stack.start_aws(cors_origin="http://127.0.0.1")
        runner_port = free_port()
        stack.env["AWS_ENDPOINT_URL_APPRUNNER"] = f"http://127.0.0.1:{runner_port}"
        stack.env["VALIDATION_SANDBOX"] = os.environ.get("VALIDATION_SANDBOX", "bwrap")
        print("seeding (demo versions, pointers, users)…", flush=True)
        subprocess.run(
            [
                PYTHON,
                str(REPO / "manage.py"),
                "devstack_seed",
                "--phase",
                "aws",
                "--migrate",
                "--cors-origin",
                "http://127.0.0.1",
            ],
            cwd=REPO,
            env=stack.env,
            check=True,
            capture_output=True,
        )
        self.token = self.django("users", "--password", self.password)["token"]
        pins = self._fleet_pointers()
        config = self._apprunner_config(pins)
        path = stack.root / "apprunner.json"
        path.write_text(json.dumps(config, indent=2))
        runner = stack.start(
            "apprunner",
            [PYTHON, "-m", "devstack.apprunner", "--config", str(path), "--port", str(runner_port)],
        )
        # The dashboard's SSM calls through the counting proxy (the web only:
        # the worker's and beat's calls are not page views).
        self.proxy = CountingProxy(stack.aws_url)
        web = stack.start_dashboard(
            workers=2, threads=4, name="web", env={"AWS_ENDPOINT_URL_SSM": self.proxy.url}
        )
        del web
        self.api = stack.urls["web"]
        stack.start(
            "worker",
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "dashboard",
                "worker",
                "--queues",
                "celery,validation",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                *(["--concurrency", str(self.concurrency)] if self.concurrency else []),
            ],
        )
        stack.start(
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
                str(stack.root / "celerybeat-schedule"),
            ],
        )
        stack.wait(runner, lambda: port_open(runner_port), 60)
        stack.wait(runner, self._services_running, 180)
        self._list_services()
        print(f"stand-in up: {len(self.services)} services", flush=True)
        self._wait_validated()

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.stack.stop()

    def django(self, *args: str) -> Any:
        result = subprocess.run(
            [PYTHON, str(REPO / "bench" / "_deployments_django.py"), *args],
            cwd=REPO,
            env=self.stack.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"_deployments_django.py {args[0]} failed:\n{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def client(self, service: str) -> Any:
        import boto3

        endpoint = (
            self.stack.env["AWS_ENDPOINT_URL_APPRUNNER"]
            if service == "apprunner"
            else self.stack.aws_url
        )
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def _fleet_pointers(self) -> dict[str, str]:
        """Each fleet environment's pointer starts as a copy of staging's;
        return environment -> its pin (parameter:version)."""
        ssm = self.client("ssm")
        staging = ssm.get_parameter(Name=f"/models/{MODEL}/staging")["Parameter"]
        pins = {"staging": f"/models/{MODEL}/staging:{staging['Version']}"}
        for i in range(1, self.fleet + 1):
            name = f"/models/{MODEL}/{fleet_name(i)}"
            version = ssm.put_parameter(
                Name=name, Value=staging["Value"], Type="String", Overwrite=True
            )["Version"]
            pins[fleet_name(i)] = f"{name}:{version}"
        return pins

    def _apprunner_config(self, pins: dict[str, str]) -> dict[str, Any]:
        from devstack.stack import Ports, apprunner_config

        env = self.stack.env
        real = apprunner_config(
            Ports(production=free_port(), staging=free_port()), env, self.stack.root, pins
        )
        staging = next(s for s in real["services"] if s["name"] == f"{MODEL}-staging")  # type: ignore[attr-defined]
        staging["env"].pop("EMF_DIMENSIONS", None)
        services = [staging]
        for i in range(1, self.fleet + 1):
            services.append(
                {
                    "name": f"{MODEL}-{fleet_name(i)}",
                    "port": 0,
                    "command": [PYTHON, "-I", "-S", str(LIGHT)],
                    "env": {
                        "MODEL_SSM_PARAMETER": pins[fleet_name(i)],
                        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
                        "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": REGION,
                        "HOST": "127.0.0.1",
                    },
                    "health_check_path": "/readyz",
                    "health_check_timeout_seconds": 60,
                    "health_check_interval_seconds": 0.5,
                }
            )
        return {**real, "services": services}

    def _services_running(self) -> bool:
        url = self.stack.env["AWS_ENDPOINT_URL_APPRUNNER"] + "/_devstack/health"
        try:
            import urllib.request

            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                found = json.loads(response.read())["services"]
        except Exception:
            return False
        bad = [s["name"] for s in found if s["status"] == "CREATE_FAILED"]
        if bad:
            raise RuntimeError(f"the stand-in could not start {bad}")
        return all(s["status"] == "RUNNING" for s in found)

    def _list_services(self) -> None:
        for summary in self.client("apprunner").list_services()["ServiceSummaryList"]:
            self.services[summary["ServiceName"]] = {
                "arn": summary["ServiceArn"],
                "url": f"http://{summary['ServiceUrl']}",
            }

    def _wait_validated(self, timeout: float = 300) -> None:
        """The seed's versions are validated by the worker (bubblewrap)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            valid = self.valid_versions()
            if len(valid) >= 3:
                print(f"valid versions: {valid}", flush=True)
                return
            with self.http() as h:
                items = h.get(f"/api/models/{MODEL}/versions").json()["items"]
            if items and all(v["status"] in {"valid", "invalid"} for v in items):
                break  # no more are coming
            time.sleep(1)
        raise RuntimeError(
            f"the demo versions were not validated:\n{self.stack.service('worker').tail()}"
        )

    # the API

    def http(self) -> Any:
        import httpx

        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Token {self.token}"}, timeout=60
        )

    def valid_versions(self) -> list[str]:
        with self.http() as h:
            body = h.get(f"/api/models/{MODEL}/versions", params={"status": "valid"}).json()
        return [v["version"] for v in body["items"]]

    def link(self, names: list[str], position: int) -> None:
        if not names:
            return
        items = []
        for name in names:
            service = self.services[f"{MODEL}-{name}"]
            items.append(f"{name}={service['arn']}={service['url']}")
        self.django("link", "--position", str(position), *items)

    def live_versions(self) -> dict[str, str | None]:
        with self.http() as h:
            found = h.get(f"/api/models/{MODEL}/environments").json()
        return {e["name"]: e["live_version"] for e in found}

    def service_log(self, service: str) -> str:
        path = self.stack.root / "apprunner" / "logs" / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def promote(h: Any, environment: str, version: str) -> tuple[float, dict[str, Any]]:
    sent = time.time()
    response = h.post(
        f"/api/models/{MODEL}/environments/{environment}/promote",
        json={"version": version, "reason": "benchmark"},
    )
    if response.status_code != 202:
        raise RuntimeError(
            f"promote {environment} {version}: {response.status_code} {response.text}"
        )
    return sent, response.json()


def wait_finished(h: Any, ids: list[int], timeout: float = 600) -> dict[int, dict[str, Any]]:
    """Poll the deployments list (one request a second) until every id is final."""
    wanted = set(ids)
    done: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(wanted) == 1:
            (only,) = wanted
            items = [h.get(f"/api/deployments/{only}").json()]
        else:
            items = h.get("/api/deployments", params={"model": MODEL, "page_size": 200}).json()[
                "items"
            ]
        for item in items:
            if item["id"] in wanted and item["status"] in FINAL:
                done[item["id"]] = item
                wanted.discard(item["id"])
        if not wanted:
            return done
        time.sleep(0.25 if len(ids) == 1 else 1.0)
    raise RuntimeError(f"deployments {sorted(wanted)} did not finish in {timeout:.0f} s")


_STARTED = re.compile(r"^(\S+) \[[^\]]+\] instance (\w+) started: pid")
_HEALTHY = re.compile(r"^(\S+) \[[^\]]+\] instance (\w+) is healthy")


def instance_cold_starts(log: str, after: float) -> list[tuple[float, float]]:
    """(started, healthy) of each instance the stand-in started after ``after``."""
    started: dict[str, float] = {}
    found = []
    for line in log.splitlines():
        if m := _STARTED.match(line):
            at = parse_time(m.group(1))
            if at >= after:
                started[m.group(2)] = at
        elif (m := _HEALTHY.match(line)) and m.group(2) in started:
            found.append((started[m.group(2)], parse_time(m.group(1))))
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid``, its reaped children and every live
    descendant (from /proc)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat (1-based).
        total += sum(int(x) for x in fields[11:15]) / _TICKS
        todo.extend(child_pids(current))
    return total


def own_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` itself (no children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:13]) / _TICKS


def cpu_by_process(ds: DeployStack) -> dict[str, float]:
    """CPU seconds so far of each process tree, and of the stand-in's own
    process (without its instances)."""
    found = {
        service.name: tree_cpu(service.pid)
        for service in ds.stack.services
        if service.popen.poll() is None
    }
    found["apprunner itself"] = own_cpu(ds.stack.service("apprunner").pid)
    return found


def other_version(valid: list[str], current: str | None) -> str:
    return next(v for v in valid if v != current)


# --- 1. promote -> live ----------------------------------------------------------------------


def measure_promote(ds: DeployStack, promotes: int) -> dict[str, Any]:
    runner = ds.client("apprunner")
    arn = ds.services[f"{MODEL}-staging"]["arn"]
    valid = ds.valid_versions()
    rows = []
    with ds.http() as h:
        for _ in range(promotes):
            current = ds.live_versions()["staging"]
            target = other_version(valid, current)
            sent, deployment = promote(h, "staging", target)
            done = wait_finished(h, [deployment["id"]])[deployment["id"]]
            if done["status"] != "succeeded":
                raise RuntimeError(f"staging deployment failed: {json.dumps(done)[:2000]}")
            finished = parse_time(done["finished_at"])
            colds = instance_cold_starts(ds.service_log(f"{MODEL}-staging"), sent)
            if len(colds) != 1:
                raise RuntimeError(f"expected one new instance, found {colds}")
            started, healthy = colds[0]
            operation = next(
                o
                for o in runner.list_operations(ServiceArn=arn)["OperationSummaryList"]
                if o["Id"] == done["operation_id"]
            )
            rows.append(
                {
                    "version": target,
                    "total": finished - sent,
                    "cold": healthy - started,
                    "to_operation": operation["StartedAt"].timestamp() - sent,
                    "to_instance": started - operation["StartedAt"].timestamp(),
                    "healthy_to_operation_end": operation["EndedAt"].timestamp() - healthy,
                    "operation_end_to_finished": finished - operation["EndedAt"].timestamp(),
                }
            )
            print(f"  promote staging -> {target}: {rows[-1]}", flush=True)
    return {"rows": rows}


# --- 2. many environments at once ------------------------------------------------------------


def measure_fleet(ds: DeployStack, fleet: int, alone_runs: int = 3) -> dict[str, Any]:
    valid = ds.valid_versions()
    names = [fleet_name(i) for i in range(1, fleet + 1)]
    alone = []
    cpu_before = cpu_by_process(ds)
    with ds.http() as h:
        for name in names[:alone_runs]:
            current = ds.live_versions()[name]
            sent, deployment = promote(h, name, other_version(valid, current))
            done = wait_finished(h, [deployment["id"]])[deployment["id"]]
            if done["status"] != "succeeded":
                raise RuntimeError(f"{name}: {json.dumps(done)[:2000]}")
            alone.append(parse_time(done["finished_at"]) - sent)
            print(f"  {name} alone: {alone[-1]:.2f} s", flush=True)
        cpu_alone = delta(cpu_by_process(ds), cpu_before)
        live = ds.live_versions()
        targets = {name: other_version(valid, live[name]) for name in names}
        cpu_before = cpu_by_process(ds)
        barrier = threading.Barrier(len(names))

        def send(name: str) -> tuple[float, float, dict[str, Any]]:
            import httpx

            with httpx.Client(
                base_url=ds.api, headers={"Authorization": f"Token {ds.token}"}, timeout=120
            ) as own:
                barrier.wait()
                sent, deployment = promote(own, name, targets[name])
                return sent, time.time(), deployment

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            posted = list(pool.map(send, names))
        first = min(s for s, _, _ in posted)
        answered = [a - s for s, a, _ in posted]
        finished = wait_finished(h, [d["id"] for _, _, d in posted], timeout=900)
        cpu_all = delta(cpu_by_process(ds), cpu_before)
    statuses: dict[str, int] = {}
    for item in finished.values():
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    finishes = sorted(parse_time(item["finished_at"]) - first for item in finished.values())
    colds, healthy = [], []
    for name in names:
        pairs = instance_cold_starts(ds.service_log(f"{MODEL}-{name}"), first)
        colds += [b - a for a, b in pairs]
        healthy += [b - first for _, b in pairs]
    # Where the time went: when each deployment's first step had started its
    # App Runner operation, and when a follow step first saw it SUCCEEDED.
    operations, seen = [], []
    with ds.http() as h:
        for item in finished.values():
            events = h.get(f"/api/deployments/{item['id']}").json()["events"]
            for event in events:
                if "started: a revision pinned" in event["message"]:
                    operations.append(parse_time(event["at"]) - first)
                elif "is SUCCEEDED" in event["message"]:
                    seen.append(parse_time(event["at"]) - first)
    return {
        "alone": alone,
        "all": finishes[-1],
        "median_finish": statistics.median(finishes),
        "first_finish": finishes[0],
        "statuses": statuses,
        "post_seconds": {"median": statistics.median(answered), "max": max(answered)},
        "light_cold": {"median": statistics.median(colds), "max": max(colds)} if colds else None,
        "count": len(names),
        "operations_started": {"median": statistics.median(operations), "last": max(operations)},
        "instances_healthy": {"median": statistics.median(healthy), "last": max(healthy)},
        "succeeded_seen": {"first": min(seen), "median": statistics.median(seen)},
        # CPU seconds per process (tree) while they ran; the alone figure
        # covers all the single runs and the idle time between them.
        "cpu_alone": cpu_alone,
        "cpu_all": cpu_all,
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


# --- 3. the models page ----------------------------------------------------------------------


def signed_in(ds: DeployStack) -> dict[str, str]:
    """Session cookies of user bench, signed in through the login form."""
    import httpx

    with httpx.Client(base_url=ds.api, timeout=30) as h:
        h.get("/login/")
        csrf = h.cookies.get("csrftoken")
        response = h.post(
            "/login/",
            data={"username": "bench", "password": ds.password, "csrfmiddlewaretoken": csrf},
            headers={"Referer": ds.api + "/login/"},
        )
        if response.status_code not in (200, 302) or "sessionid" not in h.cookies:
            raise RuntimeError(f"sign-in failed: {response.status_code}")
        return dict(h.cookies.items())


def forget_states(ds: DeployStack) -> None:
    """Empty the environments' live-check cache (the keys only: the same Redis
    is Celery's broker)."""
    import redis

    client = redis.Redis.from_url(ds.stack.env["REDIS_URL"])
    keys = list(client.scan_iter(match="*modeldeck:environment-state:*"))
    if keys:
        client.delete(*keys)


def page_views(ds: DeployStack, seconds: float, cold_views: int) -> dict[str, Any]:
    import httpx

    assert ds.proxy is not None
    cookies = signed_in(ds)
    with httpx.Client(base_url=ds.api, cookies=cookies, timeout=60) as h:
        for _ in range(3):  # warm up (and fill the cache)
            assert h.get("/models/").status_code == 200
        # Cold: the cache emptied before each view (every live check runs).
        cold = []
        before = ds.proxy.snapshot()
        for _ in range(cold_views):
            forget_states(ds)
            started = time.perf_counter()
            response = h.get("/models/")
            cold.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
        cold_calls = ds.proxy.snapshot() - before
    # Throughput: PAGE_CLIENTS signed-in clients as fast as the answers come.
    stop = time.monotonic() + seconds
    counts = [0] * PAGE_CLIENTS
    latencies: list[list[float]] = [[] for _ in range(PAGE_CLIENTS)]

    def run(index: int) -> None:
        with httpx.Client(base_url=ds.api, cookies=cookies, timeout=60) as own:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = own.get("/models/")
                latencies[index].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"/models/ answered {response.status_code}")
                counts[index] += 1

    before = ds.proxy.snapshot()
    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(PAGE_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    calls = ds.proxy.snapshot() - before
    views = sum(counts)
    flat = sorted(x for part in latencies for x in part)
    return {
        "views": views,
        "seconds": elapsed,
        "per_second": views / elapsed,
        "p50": statistics.median(flat),
        "ssm_calls": dict(calls),
        "ssm_per_view": sum(calls.values()) / views,
        "cold_median": statistics.median(cold),
        "cold_ssm_per_view": sum(cold_calls.values()) / cold_views,
        "cold_calls": dict(cold_calls),
    }


def dump(ds: DeployStack, where: Path) -> None:
    """The processes' logs and every deployment with its events, for profiling."""
    import shutil

    where.mkdir(parents=True, exist_ok=True)
    for log in ds.stack.root.glob("*.log"):
        shutil.copy(log, where / log.name)
    try:
        with ds.http() as h:
            items = h.get("/api/deployments", params={"model": MODEL, "page_size": 200}).json()
            full = [h.get(f"/api/deployments/{d['id']}").json() for d in items["items"]]
        (where / "deployments.json").write_text(json.dumps(full, indent=1))
    except Exception as exc:
        print(f"could not dump the deployments: {exc}", file=sys.stderr)


# --- report ----------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def report(data: dict[str, Any]) -> str:
    p = data["promote"]["rows"]
    total = statistics.median(r["total"] for r in p)
    cold = statistics.median(r["cold"] for r in p)
    overhead = statistics.median(r["total"] - r["cold"] for r in p)
    f = data["fleet"]
    alone = statistics.median(f["alone"])
    ratio = f["all"] / alone
    one, many = data["pages"]["1"], data["pages"][str(data["page_environments"])]
    n = data["page_environments"]
    rows = [
        [
            "promote -> live (POST to `succeeded`) minus the new instance's own cold start "
            f"(real inference service, median of {len(p)})",
            seconds(overhead),
            f"promote -> live {seconds(total)}; cold start (instance start to /readyz 200) "
            f"{seconds(cold)}",
            "≤ 3 s",
            "yes" if overhead <= 3 else f"**no** (+{overhead - 3:.2f} s)",
        ],
        [
            f"{f['count']} environments deploying at once (one worker, default concurrency): "
            "first POST to the last `succeeded`",
            seconds(f["all"]),
            f"{ratio:.2f}x one environment alone ({seconds(alone)}, median of {len(f['alone'])})",
            "≤ 1.5x",
            "yes" if ratio <= 1.5 else f"**no** ({ratio / 1.5:.2f}x the target)",
        ],
        [
            f"models page with {n} environments: page views per second ({PAGE_CLIENTS} "
            "clients, live checks cached)",
            f"{many['per_second']:.1f} /s (p50 {many['p50'] * 1000:.0f} ms)",
            f"{many['per_second'] / one['per_second']:.2f}x the page with 1 environment "
            f"({one['per_second']:.1f} /s)",
            "measured",
            "-",
        ],
        [
            f"SSM calls per view, {n} environments: cached / cache emptied before each view",
            f"{many['ssm_per_view']:.2f} / {many['cold_ssm_per_view']:.1f}",
            f"1 environment: {one['ssm_per_view']:.2f} / {one['cold_ssm_per_view']:.1f}",
            f"cached ≪ {n}",
            "yes" if many["ssm_per_view"] < 1 else "**no**",
        ],
        [
            f"models page with {n} environments, cache emptied (every live check runs): one view",
            f"{many['cold_median'] * 1000:.0f} ms",
            f"1 environment: {one['cold_median'] * 1000:.0f} ms",
            "measured",
            "-",
        ],
    ]
    parts = {
        key: statistics.median(r[key] for r in p)
        for key in (
            "to_operation",
            "to_instance",
            "healthy_to_operation_end",
            "operation_end_to_finished",
        )
    }
    light = f["light_cold"] or {"median": float("nan"), "max": float("nan")}
    return "\n".join(
        [
            f"`python bench/bench_deployments.py{data['flags']}` on {data['date']}: "
            f"{data['machine']}. "
            "The local stack's processes on free ports, as `make run` starts them: the dashboard "
            f"under gunicorn (2 workers, 4 threads, DEBUG off, {data['database']}, Redis cache), "
            "one Celery "
            f"worker at its default concurrency ({data['concurrency']} pool processes) and beat, "
            "with the local stack's timing (DEPLOYMENT_POLL_SECONDS=1, "
            "DEPLOYMENT_RECONCILE_EVERY_SECONDS=1), the embedded AWS (moto) and the App Runner "
            "stand-in (without --cloudwatch). iris-staging runs the real inference service; the "
            f"{f['count']} `bench-NN` environments run the light instance "
            "(devstack/apprunner/light_instance.py, bench and tests only: reads its pinned pointer "
            "from SSM, answers /readyz and /version, loads no model), since the second row "
            "measures the control plane, not PyTorch start-ups. Times are from the POST to the "
            "deployment's `finished_at`; the cold start is the stand-in's own log of that "
            "deployment's new instance (start to its first /readyz 200, probed every 0.5 s). "
            "The dashboard's SSM calls are counted at a proxy in front of the embedded AWS. "
            'The "vs" column compares with a baseline measured in the same run.',
            "",
            table(["measurement", "result", "vs", "target", "met?"], rows),
            "",
            "Promote -> live, median of its parts: POST to the UpdateService operation's start "
            f"{seconds(parts['to_operation'])}; operation start to the new instance's start "
            f"{seconds(parts['to_instance'])}; instance cold start {seconds(cold)}; healthy to the "
            "operation's end (traffic switched, the old instance drained and stopped) "
            f"{seconds(parts['healthy_to_operation_end'])}; operation end to `succeeded` "
            f"(the next follow poll, then /version must report the SHA-256) "
            f"{seconds(parts['operation_end_to_finished'])}. "
            f"{f['count']} at once: the POSTs answered in {seconds(f['post_seconds']['median'])} "
            f"(median; slowest {seconds(f['post_seconds']['max'])}); the first deployment "
            f"succeeded after {seconds(f['first_finish'])}, half of them after "
            f"{seconds(f['median_finish'])}; outcomes {json.dumps(f['statuses'])}; the light "
            f"instances' own cold starts took {seconds(light['median'])} (median, slowest "
            f"{seconds(light['max'])}). Models page SSM calls per view: cached "
            f"{json.dumps(many['ssm_calls'])} over {many['views']} views in "
            f"{many['seconds']:.0f} s; emptied {json.dumps(many['cold_calls'])} over "
            f"{data['cold_views']} views.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer environments and runs")
    parser.add_argument("--promotes", type=int)
    parser.add_argument("--fleet", type=int)
    parser.add_argument("--page-environments", type=int)
    parser.add_argument("--page-seconds", type=float)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        help="profiling only: the worker's pool size instead of Celery's default",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="a fresh PostgreSQL database (on BENCH_POSTGRES_URL's or DATABASE_URL's server) "
        "instead of the local stack's SQLite",
    )
    parser.add_argument(
        "--dump", type=Path, help="keep the processes' logs and the deployments here (profiling)"
    )
    args = parser.parse_args()
    promotes = args.promotes or (2 if args.quick else 5)
    fleet = args.fleet or (10 if args.quick else 50)
    page_envs = args.page_environments or (5 if args.quick else 20)
    page_seconds = args.page_seconds or (3.0 if args.quick else 10.0)
    cold_views = 3 if args.quick else 7
    if page_envs > fleet:
        parser.error("--page-environments must not exceed --fleet")
    flags = ""
    if (
        args.quick
        or args.promotes
        or args.fleet
        or args.page_environments
        or args.worker_concurrency
    ):
        flags = " " + " ".join(a for a in sys.argv[1:] if a != "--no-write")
    data: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared by every process "
        f"(load average {os.getloadavg()[0]:.1f} at the start)",
        "concurrency": args.worker_concurrency or os.cpu_count(),
        "page_environments": page_envs,
        "cold_views": cold_views,
        "flags": flags.rstrip(),
        "pages": {},
    }
    database_url, admin = "", None
    if args.postgres:
        admin = postgres_admin_url()
        database_url = (postgres_database(admin, PG_DATABASE) if admin else None) or ""
        if not database_url:
            print("no PostgreSQL server (BENCH_POSTGRES_URL or DATABASE_URL)", file=sys.stderr)
            return 1
    data["database"] = "PostgreSQL" if database_url else "SQLite"
    ds = DeployStack(fleet=fleet, concurrency=args.worker_concurrency, database_url=database_url)
    try:
        ds.start()
        print("3. models page…", flush=True)
        ds.link([fleet_name(1)], 10)
        data["pages"]["1"] = page_views(ds, page_seconds, cold_views)
        print(f"  1 environment: {data['pages']['1']}", flush=True)
        ds.link([fleet_name(i) for i in range(2, page_envs + 1)], 11)
        data["pages"][str(page_envs)] = page_views(ds, page_seconds, cold_views)
        print(f"  {page_envs} environments: {data['pages'][str(page_envs)]}", flush=True)
        if args.dump is not None:
            args.dump.mkdir(parents=True, exist_ok=True)
            found = ds.django("profile-page", "--views", "10")
            (args.dump / "models-page.prof.txt").write_text(
                f"queries per view: {found['queries_per_view']}\n{found['profile']}"
            )
        ds.link([fleet_name(i) for i in range(page_envs + 1, fleet + 1)], 10 + page_envs)
        ds.link(["staging"], 0)
        print("1. promote -> live…", flush=True)
        data["promote"] = measure_promote(ds, promotes)
        print(f"2. {fleet} environments at once…", flush=True)
        data["fleet"] = measure_fleet(ds, fleet)
        print(f"  {data['fleet']}", flush=True)
    except Exception:
        for name in ("worker", "web", "apprunner"):
            try:
                print(f"--- {name} (tail)\n{ds.stack.service(name).tail(4000)}", file=sys.stderr)
            except StopIteration:
                pass
        raise
    finally:
        if args.dump is not None:
            dump(ds, args.dump)
        ds.stop()
        if admin and database_url:
            drop_postgres_database(admin, PG_DATABASE)
    body = report(data)
    print(f"### {SUBSECTION}\n\n{body}")
    if not args.no_write:
        write_subsection(SUBSECTION, body, doc=DOC, section=SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
