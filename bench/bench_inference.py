"""Benchmark of the inference service against issue 3's targets; writes the "Inference"
section of docs/benchmarks.md.

    .venv/bin/python bench/bench_inference.py [--quick] [--only start,serve,batch]
                                              [--no-write]

``BENCH_QUICK=1`` is ``--quick`` (smaller models, shorter runs). Every number is
a ratio to a baseline measured in the same run on the same machine, with models
this script builds (TorchScript, float32):

1. load: ``load_module`` + warm-up of a ~300 MB and a ~1 GB artifact (48 and
   128 MB quick), in a new process, cold page cache, against
   ``cat file > /dev/null`` of the same file;
2. cold start: ``python -m inference`` with the artifact in the embedded S3
   (moto's server, ``python -m devstack.embedded_aws``, a separate process) and
   its pointer in SSM, from process start to ``/readyz`` 200; the phases come
   from the service's own ``startup_phase`` log lines; download + verify against
   a plain parallel ranged download of the same object (same part size and
   concurrency, boto3, written into a file, no hashing, no fsync);
3. warm start: the same process again with the version cached (cold page
   cache): cache check + load + warm-up against the load alone (1.); resolving
   the pointer comes before and costs the same either way, so it is reported
   apart, as is the whole process start to ``/readyz`` 200;
4. serving overhead: ``/predict`` p50 for one example from one client minus the
   model's own forward p50 in this process (a small MLP, so that the forward
   is not the noise);
5. batching: ``/predict`` throughput with 64 concurrent single-example clients,
   batching on against off, and against the raw in-process forward throughput
   at batch 32; one client, on against off (512-2048-2048-2048-10 MLP: a
   forward of 32 examples costs about four times one of a single example, so
   coalescing pays);
6. health under load: ``/healthz`` p99 from a probe every 5 ms while 5. runs.

The load generator is ``wrk`` when installed (``apt-get install wrk``): C, one
thread, keep-alive, cheap per request, which matters when it shares two cores
with the server. Without it a small asyncio HTTP/1.1 client is used; the table
says which.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: `inference` must be importable

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Inference"
MiB = 1024 * 1024
REGION = "us-east-1"
BUCKET = "bench-models"
PARAMETER = "/models/bench/prod"
# Every process the benchmark starts: the service's own torch setting and the
# in-process baselines use the same thread count.
TORCH_THREADS = 1
# moto reads the whole object for every ranged GET, so its cost per GET grows
# with the object, not with the range: with the service's default 8 MiB parts a
# 1 GB download would measure moto, not the service.
PART_SIZE = 64 * MiB
CONCURRENCY = 8
CLIENTS = 64


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one run."""

    name: str
    big_models_mb: tuple[int, ...]
    seconds: int
    rounds: int
    start_rounds: int


FULL = Profile("full", big_models_mb=(300, 1000), seconds=5, rounds=3, start_rounds=2)
QUICK = Profile("quick", big_models_mb=(48, 128), seconds=2, rounds=2, start_rounds=1)


# --------------------------------------------------------------------------- models


class Mlp(nn.Module):
    """``widths[0] -> ... -> widths[-1]``, ReLU between the layers."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def big_mlp(megabytes: int) -> nn.Module:
    """A stack of 4096x4096 layers totalling about ``megabytes`` MB of float32 weights."""
    width = 4096
    count = max(1, round(megabytes * 1e6 / (width * width * 4)))
    layers: list[nn.Module] = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        # meta + to_empty skips nn.Linear's slow kaiming init of a billion numbers.
        layer = nn.Linear(width, width, device="meta").to_empty(device="cpu")
        with torch.no_grad():
            layer.weight.normal_(0, 0.01, generator=generator)
            layer.bias.zero_()
        layers += [layer, nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers).eval()


@dataclass
class Artifact:
    """A saved TorchScript model and its pointer fields."""

    label: str
    path: Path
    sha256: str
    size: int
    features: int

    def pointer(self, **changes: Any) -> dict[str, Any]:
        pointer = {
            "schema": 1,
            "model": "bench",
            "version": self.label,
            "bucket": BUCKET,
            "key": f"models/bench/{self.label}/model.pt",
            "s3_version_id": "not-used",
            "sha256": self.sha256,
            "size": self.size,
            "format": "torchscript",
            "input": {"shape": [self.features], "dtype": "float32"},
        }
        pointer.update(changes)
        return pointer


def save(module: nn.Module, directory: Path, label: str, features: int) -> Artifact:
    """Script and save ``module`` to ``directory/<label>.pt``; return it with its SHA-256."""
    path = directory / f"{label}.pt"
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return Artifact(label, path, digest.hexdigest(), path.stat().st_size, features)


def seed_cache(cache: Path, artifact: Artifact) -> None:
    """Put ``artifact`` into a service cache directory (unstamped, as a copy would be)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / artifact.sha256
    if not target.exists():
        os.link(artifact.path, target)


# --------------------------------------------------------------------------- page cache


def drop_from_page_cache(path: Path) -> str:
    """Evict ``path`` from the page cache; return how (and whether it was checked)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    resident = resident_bytes(path)
    if resident is None:
        return "posix_fadvise(DONTNEED), unchecked (no fincore)"
    if resident <= path.stat().st_size // 100:
        return "posix_fadvise(DONTNEED)"
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return f"none worked ({resident} bytes stayed resident)"
    return "drop_caches"


def resident_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache, by util-linux's ``fincore``; None without it."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def timed_cat(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(f"cat '{path}' > /dev/null", shell=True, check=True)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- load


CHILD_LOAD = "--child-load"


def child_load(path: str, features: int) -> None:
    """In a fresh process: time load_module + warm-up of ``path``; print JSON.

    torch and the loader are imported first and the file is dropped from the
    page cache after that, so that only the load is cold, not the interpreter.
    """
    from inference.loader import load_module, warm_up
    from inference.pointer import InputSpec

    torch.set_num_threads(TORCH_THREADS)
    spec = InputSpec(shape=(features,), dtype="float32")
    method = drop_from_page_cache(Path(path))
    started = time.perf_counter()
    module = load_module(Path(path), "torchscript")
    loaded = time.perf_counter()
    warm_up(module, spec)
    done = time.perf_counter()
    print(json.dumps({"load": loaded - started, "warmup": done - loaded, "method": method}))


def service_environment(**extra: str) -> dict[str, str]:
    """The benchmark's processes' environment: no stray model or AWS settings."""
    prefixes = ("MODEL_", "INFERENCE_", "AWS_", "DOWNLOAD_", "BATCH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTHONPATH=str(REPO), TORCH_NUM_THREADS=str(TORCH_THREADS))
    env.update(extra)
    return env


@dataclass
class LoadResult:
    cat: float
    load: float
    warmup: float
    cache_method: str

    @property
    def ready(self) -> float:
        return self.load + self.warmup


def load_in_new_process(path: Path, features: int) -> tuple[float, float, str]:
    """Cold load + warm-up of ``path`` in a new process: (load s, warm-up s, cache method)."""
    out = subprocess.run(
        [sys.executable, __file__, CHILD_LOAD, str(path), str(features)],
        env=service_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["load"], result["warmup"], result["method"]


# --------------------------------------------------------------------------- service process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str) -> int:
    """Status of a GET on a fresh connection; 0 when nothing listens yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
    except OSError:
        return 0
    return int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0


@dataclass
class Started:
    """A running service and what its start looked like."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started_at: float  # time.time() just before the process was created
    ready_after: float  # seconds from then to the first /readyz 200

    def events(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def phases(self) -> dict[str, float]:
        return {
            e["phase"]: float(e["duration_s"])
            for e in self.events()
            if e.get("event") == "startup_phase"
        }

    def event(self, name: str) -> dict[str, Any]:
        return next(e for e in self.events() if e.get("event") == name)

    def seconds_to(self, name: str) -> float:
        """Seconds from process creation to the log line of event ``name``."""
        ts = datetime.fromisoformat(self.event(name)["ts"])
        return ts.timestamp() - self.started_at


@contextmanager
def service(workdir: Path, label: str, **env: str) -> Iterator[Started]:
    """Run ``python -m inference`` with ``env``; yield it once /readyz says 200."""
    port = free_port()
    log = workdir / f"service-{label}-{port}.log"
    environment = service_environment(HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="INFO", **env)
    with log.open("wb") as out:
        started_at = time.time()
        clock = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "inference"],
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Watch the log for the end of startup rather than polling /readyz all along:
        # each poll is a request the service handles while it loads, on the same
        # interpreter lock as the loader. Once the line is there, /readyz confirms.
        deadline = clock + 600
        while b'"startup_ready"' not in log.read_bytes():
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}; see {log}")
            if b'"startup_failed"' in log.read_bytes() or time.perf_counter() > deadline:
                raise RuntimeError(f"the service did not become ready; see {log}")
            time.sleep(0.005)
        while http_status(port, "/readyz") != 200:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the service did not answer /readyz 200; see {log}")
            time.sleep(0.005)
        yield Started(port, process, log, started_at, time.perf_counter() - clock)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- embedded AWS


@dataclass
class EmbeddedAws:
    endpoint: str
    process: subprocess.Popen[str]

    def client(self, name: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            name,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                max_pool_connections=CONCURRENCY + 2,
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=120,
                retries={"mode": "standard", "max_attempts": 4},
            ),
        )

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }


@contextmanager
def embedded_aws() -> Iterator[EmbeddedAws]:
    """moto's server as its own process (as in the local stack), with the models bucket."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.embedded_aws", "--port", "0", "--bucket", BUCKET],
        cwd=REPO,
        env=service_environment(AWS_REGION=REGION),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"ready at (http://\S+)", line)
            if match:
                break
        else:
            raise RuntimeError("the embedded AWS did not start")
        # Keep its pipe drained so that it never blocks on a full stdout.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield EmbeddedAws(match.group(1), process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def upload(aws: EmbeddedAws, artifact: Artifact) -> dict[str, Any]:
    """Store ``artifact`` in the bucket and its pointer in SSM; return the pointer."""
    from boto3.s3.transfer import TransferConfig

    s3 = aws.client("s3")
    key = f"models/bench/{artifact.label}/model.pt"
    s3.upload_file(
        str(artifact.path), BUCKET, key, Config=TransferConfig(multipart_chunksize=64 * MiB)
    )
    version = s3.head_object(Bucket=BUCKET, Key=key)["VersionId"]
    pointer = artifact.pointer(s3_version_id=version)
    aws.client("ssm").put_parameter(
        Name=PARAMETER, Value=json.dumps(pointer), Type="String", Overwrite=True
    )
    return pointer


def plain_download(aws: EmbeddedAws, pointer: dict[str, Any], target: Path) -> float:
    """Seconds for a parallel ranged download into ``target``: no hashing, no fsync."""
    s3 = aws.client("s3")
    size = pointer["size"]
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def part(start: int) -> None:
        end = min(start + PART_SIZE, size) - 1
        body = s3.get_object(
            Bucket=BUCKET,
            Key=pointer["key"],
            VersionId=pointer["s3_version_id"],
            Range=f"bytes={start}-{end}",
        )["Body"].read()
        os.pwrite(fd, body, start)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(part, range(0, size, PART_SIZE)))
        return time.perf_counter() - started
    finally:
        os.close(fd)
        target.unlink()


@dataclass
class StartResult:
    """Cold and warm start of one artifact."""

    size: int
    cold_ready: float  # process start -> /readyz 200
    cold_imports: float  # process start -> service_start log line
    cold_phases: dict[str, float]
    plain: float
    warm_ready: float
    warm_startup: float  # the startup thread: resolve .. ready
    warm_phases: dict[str, float]
    full_startup: float  # warm start with MODEL_CACHE_VERIFY=full
    cache_method: str

    @property
    def download_verify(self) -> float:
        return self.cold_phases["download"] + self.cold_phases["verify"]

    @property
    def warm_cached_to_ready(self) -> float:
        """From the pointer being known to ready: cache check, load, warm-up.

        Resolving the pointer (an SSM read here) comes before and costs the same
        with or without a cache, so it is reported apart.
        """
        p = self.warm_phases
        return p.get("cache_verify", 0.0) + p["load"] + p["warmup"]


def measure_starts(
    aws: EmbeddedAws, artifact: Artifact, workdir: Path, rounds: int, warm_rounds: int
) -> tuple[StartResult, LoadResult]:
    """Cold starts from the embedded S3, then loads and warm starts from the cache.

    Plain downloads and cold starts alternate, ``rounds`` of each; then
    ``warm_rounds`` of: ``cat``, load + warm-up in a new process, warm start, each
    on a cold page cache. The best round of each side counts: it is the one least
    disturbed by whatever else runs on the machine, and both sides get it.
    """
    pointer = upload(aws, artifact)
    env = dict(
        aws.env(),
        MODEL_SSM_PARAMETER=PARAMETER,
        DOWNLOAD_PART_SIZE=str(PART_SIZE),
        DOWNLOAD_CONCURRENCY=str(CONCURRENCY),
    )
    plains: list[float] = []
    colds: list[Started] = []
    for attempt in range(rounds):
        plains.append(plain_download(aws, pointer, workdir / "plain-download"))
        cache = workdir / f"cache-{artifact.label}-{attempt}"
        with service(workdir, f"cold-{artifact.label}", MODEL_CACHE_DIR=str(cache), **env) as cold:
            colds.append(cold)
        if attempt:
            shutil.rmtree(workdir / f"cache-{artifact.label}-{attempt - 1}")
    cold = min(colds, key=lambda c: c.phases()["download"] + c.phases()["verify"])
    entry = cache / artifact.sha256
    env["MODEL_CACHE_DIR"] = str(cache)
    # cat, the load alone and the warm start take turns on the same file, so that
    # all three meet the same state of the machine (its page cache, its free
    # memory, other jobs); the best round of each counts.
    cats: list[float] = []
    loads: list[tuple[float, float]] = []
    warms: list[Started] = []
    methods = set()
    for _ in range(warm_rounds):
        methods.add(drop_from_page_cache(entry))
        cats.append(timed_cat(entry))
        load, warmup, method = load_in_new_process(entry, artifact.features)
        loads.append((load, warmup))
        methods.add(method)
        methods.add(drop_from_page_cache(entry))
        with service(workdir, f"warm-{artifact.label}", **env) as warm:
            warms.append(warm)
    warm = min(warms, key=lambda w: sum(v for k, v in w.phases().items() if k != "resolve"))
    best_load, best_warmup = min(loads, key=sum)
    method = ", ".join(sorted(methods))
    load_result = LoadResult(min(cats), best_load, best_warmup, method)
    drop_from_page_cache(entry)
    with service(workdir, f"full-{artifact.label}", MODEL_CACHE_VERIFY="full", **env) as full:
        full_startup = float(full.event("startup_ready")["duration_s"])
    shutil.rmtree(cache)
    start_result = StartResult(
        size=artifact.size,
        cold_ready=cold.ready_after,
        cold_imports=cold.seconds_to("service_start"),
        cold_phases=cold.phases(),
        plain=min(plains),
        warm_ready=warm.ready_after,
        warm_startup=float(warm.event("startup_ready")["duration_s"]),
        warm_phases=warm.phases(),
        full_startup=full_startup,
        cache_method=method,
    )
    return start_result, load_result


# --------------------------------------------------------------------------- load generation


@dataclass
class Run:
    """What one load-generator run saw."""

    requests_per_second: float
    p50: float
    p99: float
    errors: int = 0
    # CPU seconds per request during the run: the service process (when a pid was
    # given) and the load generator. CPU time is what contention moves least.
    service_cpu: float | None = None
    load_cpu: float | None = None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Body:
    """A request body and its content type."""

    data: bytes
    content_type: str


def example_row(features: int, seed: int = 0) -> list[float]:
    return [((seed * 31 + i * 17) % 100) / 50 - 1 for i in range(features)]


def example_body(features: int, seed: int = 0) -> Body:
    """One example as the default JSON body."""
    return Body(json.dumps({"inputs": [example_row(features, seed)]}).encode(), "application/json")


def example_npy(features: int, seed: int = 0) -> Body:
    """The same example as a binary ``.npy`` body (docs/inference.md)."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([example_row(features, seed)], dtype=np.float32))
    return Body(buffer.getvalue(), "application/x-npy")


class Wrk:
    """``wrk`` with Lua scripts for the POST body and the paced probe."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    name = "wrk 4 (one thread, keep-alive)"

    def script(self, name: str, body: Body | None, delay_ms: int = 0) -> Path:
        lines = []
        if body is not None:
            # Read from a file: a Lua long string would turn CR LF in binary bodies into LF.
            data = self.workdir / f"{name}.body"
            data.write_bytes(body.data)
            lines += [
                'wrk.method = "POST"',
                f'wrk.headers["Content-Type"] = "{body.content_type}"',
                f'local f = assert(io.open("{data}", "rb"))',
                "wrk.body = f:read('*a')",
                "f:close()",
            ]
        if delay_ms:
            lines.append(f"function delay() return {delay_ms} end")
        path = self.workdir / f"{name}.lua"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(
        self, port: int, path: str, *, connections: int, seconds: int, script: Path
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{path}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @staticmethod
    def result(process: subprocess.Popen[str]) -> Run:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed: {out}")
        latencies = {
            q: _duration(value)
            for q, value in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE)
        }
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = sum(
            int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors):\D*(\d+)", out)
        )
        return Run(rps, latencies["50"], latencies["99"], errors)

    def run(
        self,
        port: int,
        path: str,
        *,
        connections: int,
        seconds: int,
        body: Body | None = None,
        probe: bool = False,
        pid: int | None = None,
    ) -> tuple[Run, Run | None]:
        """Load ``path`` (and, with ``probe``, /healthz every 5 ms meanwhile).

        With ``pid``, the run also reports the CPU the service and wrk spent per request.
        """
        script = self.script(f"load-{connections}", body)
        warm = self.start(port, path, connections=connections, seconds=1, script=script)
        self.result(warm)
        prober = None
        if probe:
            paced = self.script("probe", None, delay_ms=5)
            prober = self.start(port, "/healthz", connections=1, seconds=seconds, script=paced)
        cpu = (process_cpu(pid), children_cpu()) if pid is not None else None
        main = self.start(port, path, connections=connections, seconds=seconds, script=script)
        run = self.result(main)
        if cpu is not None and pid is not None and run.requests_per_second > 0:
            requests = run.requests_per_second * seconds
            run.service_cpu = (process_cpu(pid) - cpu[0]) / requests
            run.load_cpu = (children_cpu() - cpu[1]) / requests
        return run, self.result(prober) if prober else None


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[match.group(2)]
    return float(match.group(1)) * scale


class AsyncioClient:
    """Fallback load generator: keep-alive HTTP/1.1 connections on one asyncio loop."""

    name = "asyncio HTTP/1.1 client (wrk not installed)"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def run(
        self,
        port: int,
        path: str,
        *,
        connections: int,
        seconds: int,
        body: Body | None = None,
        probe: bool = False,
        pid: int | None = None,
    ) -> tuple[Run, Run | None]:
        return asyncio.run(self._run(port, path, connections, seconds, body, probe))

    async def _run(
        self, port: int, path: str, connections: int, seconds: int, body: Body | None, probe: bool
    ) -> tuple[Run, Run | None]:
        method = "POST" if body is not None else "GET"
        raw = _raw_request(method, path, body)
        stop = asyncio.Event()
        latencies: list[float] = []
        probes: list[float] = []
        counting = False

        async def client(paced: bool, request: bytes, sink: list[float]) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while not stop.is_set():
                    started = time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    if length:
                        await reader.readexactly(int(length.group(1)))
                    if counting:
                        sink.append(time.perf_counter() - started)
                    if paced:
                        await asyncio.sleep(0.005)
            finally:
                writer.close()

        tasks = [asyncio.create_task(client(False, raw, latencies)) for _ in range(connections)]
        if probe:
            probe_raw = _raw_request("GET", "/healthz", None)
            tasks.append(asyncio.create_task(client(True, probe_raw, probes)))
        await asyncio.sleep(1)
        counting = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        counting = False
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        main = Run(len(latencies) / elapsed, _quantile(latencies, 0.5), _quantile(latencies, 0.99))
        probe_run = (
            Run(len(probes) / elapsed, _quantile(probes, 0.5), _quantile(probes, 0.99))
            if probe
            else None
        )
        return main, probe_run


def _raw_request(method: str, path: str, body: Body | None) -> bytes:
    data = body.data if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += f"Content-Type: {body.content_type}\r\n"
    return head.encode() + b"\r\n" + data


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --------------------------------------------------------------------------- serving


def forward_seconds(path: Path, features: int, batch: int, seconds: float) -> float:
    """Median wall time of the model's forward on ``batch`` examples, in this process.

    Exactly what the service's batcher calls (``LoadedModel.forward``) minus the
    request around it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        module = torch.jit.load(str(path)).eval()
        x = torch.rand(batch, features) * 2 - 1
        samples: list[float] = []
        with torch.inference_mode():
            for _ in range(20):
                module(x)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or len(samples) < 20:
                started = time.perf_counter()
                module(x)
                samples.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(samples)


@dataclass
class ServeResult:
    forward: float
    served: Run
    healthz: Run


def measure_overhead(
    load: Wrk | AsyncioClient, artifact: Artifact, workdir: Path, seconds: int
) -> ServeResult:
    cache = workdir / "cache-serve"
    seed_cache(cache, artifact)
    forward = forward_seconds(artifact.path, artifact.features, 1, seconds / 2)
    env = {"MODEL_POINTER": json.dumps(artifact.pointer()), "MODEL_CACHE_DIR": str(cache)}
    with service(workdir, "overhead", **env) as running:
        body = example_body(artifact.features)
        served, _ = load.run(running.port, "/predict", connections=1, seconds=seconds, body=body)
        healthz, _ = load.run(running.port, "/healthz", connections=1, seconds=seconds)
    return ServeResult(forward, served, healthz)


@dataclass
class Round:
    """One round at 64 clients: the raw forward around it and the three services' runs."""

    raw_32: float  # examples/s of the in-process forward at batch 32 (before and after)
    on: Run  # JSON bodies, batching on (the default service)
    npy: Run  # .npy bodies, batching on
    off: Run  # JSON bodies, BATCHING=off: one forward per request (the naive service)
    batch_sizes: dict[str, float] = field(default_factory=dict)  # mean examples per forward


def batch_counters(port: int) -> tuple[float, float]:
    """(sum, count) of the service's inference_batch_examples histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = dict(re.findall(r"^inference_batch_examples_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


@dataclass
class BatchResult:
    forward_1: float
    forward_32: float
    rounds: list[Round]
    runnable: list[int]  # machine-wide runnable threads, sampled during the 64-client runs
    on_1: Run
    off_1: Run
    probe: Run
    idle_probe: Run

    def median(self, ratio: Callable[[Round], float]) -> float:
        return statistics.median(ratio(r) for r in self.rounds)

    def median_rate(self, side: str) -> float:
        return statistics.median(getattr(r, side).requests_per_second for r in self.rounds)

    @property
    def raw_32_examples_per_second(self) -> float:
        return statistics.median(r.raw_32 for r in self.rounds)


def _rate_over(side: str, baseline: str, r: Round) -> float:
    """``side``'s requests/s over the baseline's (a run, or the raw examples/s)."""
    base = r.raw_32 if baseline == "raw_32" else getattr(r, baseline).requests_per_second
    rate: float = getattr(r, side).requests_per_second
    return rate / base


def _cpu_note(batch: BatchResult) -> str:
    """Where the CPU goes at 64 clients, and the ceiling it puts on this machine."""
    cpus = len(os.sched_getaffinity(0))

    def median_of(side: str, what: str) -> float:
        values = [getattr(getattr(r, side), what) for r in batch.rounds]
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else float("nan")

    forward = batch.forward_32 / 32
    parts = []
    for side, label in (("on", "JSON"), ("npy", ".npy")):
        service_cpu, load_cpu = median_of(side, "service_cpu"), median_of(side, "load_cpu")
        ceiling = cpus / (service_cpu + load_cpu)
        parts.append(
            f"{label}: the service {service_cpu * 1e6:.0f} us (of which the forward, at "
            f"batch 32, {forward * 1e6:.0f} us), wrk {load_cpu * 1e6:.0f} us, so {cpus} "
            f"CPUs serve at most {ceiling:.0f} req/s = "
            f"{ceiling / batch.raw_32_examples_per_second:.2f}x the raw forward"
        )
    runnable = statistics.median(batch.runnable) if batch.runnable else float("nan")
    used = statistics.median(
        r.on.requests_per_second * ((r.on.service_cpu or 0) + (r.on.load_cpu or 0))
        for r in batch.rounds
    )
    sizes = [r.batch_sizes.get("on") for r in batch.rounds]
    mean_batch = statistics.median(s for s in sizes if s) if any(sizes) else float("nan")
    return (
        f"CPU per request at {CLIENTS} clients (median of the rounds, from /proc and "
        "getrusage; it moves less with other jobs than throughput does): "
        + "; ".join(parts)
        + f". While serving JSON bodies the service and wrk used {used:.2f} of the "
        f"{cpus} CPUs. Examples per forward pass with JSON bodies "
        f"(the service's inference_batch_examples): {mean_batch:.1f} on average. "
        f"Runnable threads machine-wide during the runs (/proc/stat procs_running every "
        f"100 ms): median {runnable:.0f}, up to 3 of them this benchmark's (event loop, "
        "forward thread, wrk)."
    )


def measure_batching(
    load: Wrk | AsyncioClient, artifact: Artifact, workdir: Path, seconds: int, rounds: int
) -> BatchResult:
    cache = workdir / "cache-batch"
    seed_cache(cache, artifact)
    forward_1 = forward_seconds(artifact.path, artifact.features, 1, seconds / 2)
    json_body = example_body(artifact.features)
    npy_body = example_npy(artifact.features)
    env = {"MODEL_POINTER": json.dumps(artifact.pointer()), "MODEL_CACHE_DIR": str(cache)}
    runs: dict[str, Run] = {}
    measured: list[Round] = []
    forwards_32: list[float] = []

    def raw_32() -> float:
        forwards_32.append(forward_seconds(artifact.path, artifact.features, 32, seconds / 2))
        return 32 / forwards_32[-1]

    # Both services run at once (the idle one costs nothing) so that their runs can
    # alternate: slow drifts of a shared machine then hit all sides alike. Each round
    # measures the raw forward right before and after its runs, and every ratio is
    # taken within a round, then the median over the rounds is reported.
    with (
        service(workdir, "batching-on", BATCHING="on", **env) as on,
        service(workdir, "batching-off", BATCHING="off", **env) as off,
    ):
        runs["idle_probe"], _ = load.run(on.port, "/healthz", connections=1, seconds=seconds)
        sampler = RunQueueSampler()
        for turn in range(rounds):
            before = raw_32()
            sides: dict[str, Run] = {}
            sizes: dict[str, float] = {}
            order = [("on", on.port, json_body), ("npy", on.port, npy_body)]
            order.append(("off", off.port, json_body))
            for name, port, body in order if turn % 2 == 0 else order[::-1]:
                probed = name == "on" and turn == 0
                pid = (on if port == on.port else off).process.pid
                before_batches = batch_counters(port)
                with sampler:
                    sides[name], probe = load.run(
                        port,
                        "/predict",
                        connections=CLIENTS,
                        seconds=seconds,
                        body=body,
                        probe=probed,
                        pid=pid,
                    )
                if probe is not None:
                    runs["probe"] = probe
                after_batches = batch_counters(port)
                forwards = after_batches[1] - before_batches[1]
                if forwards:
                    sizes[name] = (after_batches[0] - before_batches[0]) / forwards
            measured.append(Round(raw_32=(before + raw_32()) / 2, batch_sizes=sizes, **sides))
        sampler.close()
        # One client: short runs in A-B-B-A order, the median of each side (the
        # difference looked for is small next to the drift of a shared machine).
        singles: dict[str, list[Run]] = {"on_1": [], "off_1": []}
        for turn in range(2 * 2):
            pair = [("on_1", on.port), ("off_1", off.port)]
            for name, port in pair if turn % 2 == 0 else pair[::-1]:
                single, _ = load.run(
                    port, "/predict", connections=1, seconds=min(2, seconds), body=json_body
                )
                singles[name].append(single)
        for name, results in singles.items():
            results.sort(key=lambda r: r.requests_per_second)
            runs[name] = results[len(results) // 2]
    return BatchResult(forward_1, statistics.median(forwards_32), measured, sampler.samples, **runs)


class RunQueueSampler:
    """While entered, samples how many threads the whole machine has runnable
    (``procs_running`` in /proc/stat) every 100 ms: other engineers' jobs share
    these CPUs, and a multi-threaded pipeline loses more to them than the
    single-threaded raw forward does."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._active = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> RunQueueSampler:
        self._active.set()
        return self

    def __exit__(self, *exc: object) -> None:
        self._active.clear()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closed.wait(0.1):
            if self._active.is_set():
                for line in Path("/proc/stat").read_text().splitlines():
                    if line.startswith("procs_running "):
                        # Less this sampling thread, running while it reads.
                        self.samples.append(int(line.split()[1]) - 1)


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    rows: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        what: str,
        value: str,
        baseline: str,
        ratio: float | None,
        target: str,
        met: bool,
    ) -> None:
        shown = f"{ratio:.2f}x" if ratio is not None else "-"
        self.rows.append((what, value, baseline, shown, target, "yes" if met else "**no**"))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def sec(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def build_report(
    profile: Profile,
    load_name: str,
    loads: dict[str, tuple[Artifact, LoadResult]],
    starts: dict[str, StartResult],
    serve: ServeResult | None,
    batch: BatchResult | None,
) -> Report:
    report = Report()
    for artifact, result in loads.values():
        ratio = result.ready / result.cat
        report.add(
            f"load {mb(artifact.size)} (cold page cache): load + warm-up",
            sec(result.ready),
            f"`cat` {sec(result.cat)}",
            ratio,
            "<= 1.5x",
            ratio <= 1.5,
        )
    for start in starts.values():
        ratio = start.download_verify / start.plain
        report.add(
            f"cold start {mb(start.size)}: download + verify",
            sec(start.download_verify),
            f"plain ranged download {sec(start.plain)}",
            ratio,
            "<= 1.25x",
            ratio <= 1.25,
        )
    for label, start in starts.items():
        load = loads[label][1].ready if label in loads else None
        if load is None:
            continue
        ratio = start.warm_cached_to_ready / load
        report.add(
            f"warm start {mb(start.size)} (version cached, cold page cache): cache check + "
            "load + warm-up",
            sec(start.warm_cached_to_ready),
            f"load alone {sec(load)}",
            ratio,
            "<= 1.2x",
            ratio <= 1.2,
        )
    if serve is not None:
        overhead = serve.served.p50 - serve.forward
        report.add(
            "serving overhead: /predict p50 (1 client) - forward p50",
            ms(overhead),
            f"/predict {ms(serve.served.p50)}, forward {ms(serve.forward)}; "
            f"/healthz round trip {ms(serve.healthz.p50)}",
            None,
            "<= 0.5 ms",
            overhead <= 0.0005,
        )
    if batch is not None:
        raw = batch.raw_32_examples_per_second
        for side, label in (("on", "JSON"), ("npy", ".npy")):
            rate = batch.median_rate(side)
            ratio = batch.median(partial(_rate_over, side, "off"))
            report.add(
                f"{CLIENTS} clients, {label} body: /predict throughput vs naive "
                "(BATCHING=off, JSON)",
                f"{rate:.0f} req/s",
                f"naive {batch.median_rate('off'):.0f} req/s",
                ratio,
                ">= 6x",
                ratio >= 6,
            )
            ratio = batch.median(partial(_rate_over, side, "raw_32"))
            report.add(
                f"{CLIENTS} clients, {label} body: served examples/s vs raw forward at batch 32",
                f"{rate:.0f} ex/s",
                f"raw {raw:.0f} ex/s (forward of 32: {ms(batch.forward_32)})",
                ratio,
                ">= 0.75x",
                ratio >= 0.75,
            )
        ratio = batch.on_1.requests_per_second / batch.off_1.requests_per_second
        report.add(
            "batching, 1 client: throughput on vs off",
            f"{batch.on_1.requests_per_second:.0f} req/s",
            f"off {batch.off_1.requests_per_second:.0f} req/s",
            ratio,
            ">= 0.9x (costs <= 10%)",
            ratio >= 0.9,
        )
        report.add(
            f"/healthz p99 while /predict is saturated ({CLIENTS} clients)",
            ms(batch.probe.p99),
            f"idle p99 {ms(batch.idle_probe.p99)}",
            batch.probe.p99 / batch.idle_probe.p99,
            "< 100 ms",
            batch.probe.p99 < 0.1,
        )
        errors = batch.probe.errors + sum(
            r.on.errors + r.npy.errors + r.off.errors for r in batch.rounds
        )
        if errors:
            report.notes.append(f"{errors} requests failed during the batching runs.")
    for start in starts.values():
        p = start.cold_phases
        rate = start.size / 1e6 / p["download"]
        report.notes.append(
            f"Cold start {mb(start.size)}: /readyz 200 after {sec(start.cold_ready)} = "
            f"interpreter + imports {sec(start.cold_imports)}, then resolve (SSM) "
            f"{ms(p['resolve'])}, download {sec(p['download'])} ({rate:.0f} MB/s), "
            f"verify {sec(p['verify'])}, load {sec(p['load'])}, warm-up {sec(p['warmup'])}. "
            f"Warm start: /readyz 200 after {sec(start.warm_ready)}; startup thread "
            f"{sec(start.warm_startup)} = resolve {ms(start.warm_phases['resolve'])}, cache "
            f"check {ms(start.warm_phases.get('cache_verify', 0.0))} (stamp), load "
            f"{sec(start.warm_phases['load'])}, warm-up {sec(start.warm_phases['warmup'])}; "
            f"with `MODEL_CACHE_VERIFY=full` (re-hash before loading) the startup thread "
            f"takes {sec(start.full_startup)}."
        )
    if batch is not None:
        report.notes.append(
            f"Batching model forward: {ms(batch.forward_1)} for 1 example, "
            f"{ms(batch.forward_32)} for 32 (median of the rounds). At {CLIENTS} clients, "
            "per round (JSON / .npy / naive req/s, raw ex/s): "
            + "; ".join(
                f"{r.on.requests_per_second:.0f} / {r.npy.requests_per_second:.0f} / "
                f"{r.off.requests_per_second:.0f}, raw {r.raw_32:.0f}"
                for r in batch.rounds
            )
            + f". /predict p50 (first round): JSON {ms(batch.rounds[0].on.p50)}, .npy "
            f"{ms(batch.rounds[0].npy.p50)}, naive {ms(batch.rounds[0].off.p50)}; /healthz "
            f"p50 under that load {ms(batch.probe.p50)}."
        )
    if batch is not None:
        report.notes.append(_cpu_note(batch))
    methods = {r.cache_method for _, r in loads.values()} | {
        s.cache_method for s in starts.values()
    }
    if methods:
        report.notes.append(
            "Cold page cache by " + ", ".join(sorted(methods)) + " on the artifact before "
            "each cold measurement (checked with fincore)."
        )
    return report


def render(report: Report, profile: Profile, load_name: str) -> str:
    cpus = len(os.sched_getaffinity(0))
    table = [
        "| measurement | value | baseline (same run) | ratio | target | met? |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in report.rows),
    ]
    method = (
        f"`make bench` (`bench/bench_inference.py`, profile {profile.name}) on "
        f"{datetime.now(UTC):%Y-%m-%d}: {platform.machine()}, {cpus} CPUs shared by the "
        f"service, the load generator and moto, {_memory()}, torch {torch.__version__}, "
        f"TORCH_NUM_THREADS={TORCH_THREADS} everywhere, `python -m inference` as its own "
        f"process at its default LOG_LEVEL=INFO (one access line per request, to a file). "
        f"Load generator: {load_name}, {profile.seconds} s per run after a 1 s warm-up. "
        f"Load and warm starts: best of {profile.rounds} rounds for each side, cold starts "
        f"and plain downloads: best of {profile.start_rounds} (the round least disturbed by "
        "other jobs); models are "
        f"stacks of 4096x4096 layers; downloads use {PART_SIZE // MiB} MiB parts, "
        f"{CONCURRENCY} at a time (moto reads the whole object for every ranged GET, so "
        "small parts would measure moto). Serving overhead: TorchScript MLP 64-256-256-10; "
        "batching: MLP 512-2048-2048-2048-10, one example per request, the batching "
        "service and the naive one (BATCHING=off: one forward per request, JSON) running at "
        f"once, {profile.rounds} rounds of {CLIENTS}-client runs (JSON body, .npy body, naive) in "
        "alternating order with the raw in-process forward at batch 32 measured right before "
        "and after each round; every ratio is taken within a round and the median of the "
        "rounds is shown; one client: median of 4 alternating 2 s runs per side. Ratios compare "
        "against a baseline from the same run, so they travel between machines better "
        "than the absolute numbers; other jobs on a shared machine move both."
    )
    return "\n".join(
        [
            SECTION,
            "",
            method,
            "",
            *table,
            "",
            *(f"- {note}" for note in report.notes),
            "",
            READING_SERVING,
            "",
            READING,
            *([_page_reporting()] if _page_reporting() else []),
            "",
        ]
    )


READING_SERVING = """\
How to read the 64-client rows (issue 11: at least 0.75x the raw forward at batch
32 and at least 6x the naive service; neither is met here). The raw forward is
one thread with a CPU to itself. The service needs two busy threads, the event
loop (HTTP, validation, the access line, the metrics) and the forward thread,
and on this 2-CPU machine wrk runs beside them. The CPU note above gives what
each costs per request: about 300 us of serving work around each example plus
wrk's 33 us, so even if nothing ever waited, the two CPUs could serve only about
1.0x the raw forward's rate. 0.75x therefore needs three quarters of the second
CPU's time to go to the forward thread's partner work with no gaps at all; the
service used 1.43 of the 2 CPUs and reached 0.67-0.69x. The `.npy` body saves
about 40 us of the event loop's work per request (validation 57 -> 15 us), a few
per cent of the total, so JSON and `.npy` land within the spread between rounds.
The earlier table (2026-11-24) had 0.68x and 6.2x; the code before this change,
run against the new in the same conditions today (4 alternating rounds each),
gave the same ratios (batching 0.52x vs 0.53x of the raw forward, naive 0.14x vs
0.13x), so the lower batching-over-naive ratio comes from the machine on the
day (the naive service, one 2 ms forward per request, loses less when the
machine is busy), not from the change. Closing the gap needs less work per
request on the event loop (most of the 300 us is uvicorn's and asyncio's own
handling of a request) or more CPUs than this machine has."""


READING = """\
How to read the load and warm-start rows. `cat` reads the file; a load also has
to fault in and fill fresh memory for every tensor, because neither of torch's
loaders for TorchScript or torch.export can memory-map (section "loading" of
docs/inference.md). With 4 KiB pages that costs about 0.5 s per GB here, more than
the read itself once the disk (here, the host's cache behind a virtio disk) does
2-3 GB/s, so the load of the 1 GB model lands at 1.6-2.4x `cat` in our runs;
the service reads the file ahead of the loader, so the disk and the page faults
overlap instead of adding up. Transparent huge pages for torch's allocations
(`THP_MEM_ALLOC_ENABLE=1`) would halve the faulting on a machine where fresh
memory is cheap, and are left off for the reason below. The warm start does the
same work as the load plus a check of the cache entry's stamp (no read, no hash;
`MODEL_CACHE_VERIFY=full` re-hashes and costs what the note above says), so its
ratio is 1.0 apart from how much the memory it faults in costs at that moment."""


def _page_reporting() -> str:
    """A sentence on free page reporting when this (virtual) machine does it, else ''."""
    base = Path("/sys/module/page_reporting/parameters")
    try:
        order = int((base / "page_reporting_order").read_text())
        reported = int((base / "reported_kib").read_text())
    except (OSError, ValueError):
        return ""
    return (
        f"This machine is a VM whose guest hands free memory back to its host (free page "
        f"reporting, in blocks of 2^{order} pages; {reported / 2**20:.0f} GiB so far), as "
        "Firecracker microVMs can: memory a process frees is returned "
        "within seconds, and the next process to allocate it waits for the host to fault "
        "it in again. That is why a start right after another process exits (the warm "
        "starts here) can pay several times the load's memory cost, why the spread "
        "between rounds is large, and why huge pages stay off (the same 1 GB load took "
        "0.2-0.3 s with them on memory still owned by the guest, 1.7-3.8 s right after a "
        "download)."
    )


def _memory() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return "unknown memory"
    return f"{pages / 2**30:.0f} GiB RAM"


def write_section(section: str) -> None:
    """Replace (or append) the Inference section of docs/benchmarks.md, keeping the rest.

    The file is read right before writing: other benchmarks write their own
    sections of it.
    """
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


# --------------------------------------------------------------------------- main


PARTS = ("start", "serve", "batch")


def run(profile: Profile, parts: set[str]) -> str:
    """Run the selected measurements; return the markdown section."""
    torch.set_num_threads(TORCH_THREADS)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-inf-")))
        load_gen: Wrk | AsyncioClient = (
            Wrk(workdir) if shutil.which("wrk") else AsyncioClient(workdir)
        )
        step = _stepper()
        loads: dict[str, tuple[Artifact, LoadResult]] = {}
        starts: dict[str, StartResult] = {}
        serve = batch = None
        if "start" in parts:
            aws = stack.enter_context(embedded_aws())
            for megabytes in profile.big_models_mb:
                label = f"{megabytes}mb"
                step(f"building the ~{megabytes} MB model")
                artifact = save(big_mlp(megabytes), workdir, label, 4096)
                step(f"load, cold and warm start of {mb(artifact.size)}")
                starts[label], load = measure_starts(
                    aws, artifact, workdir, profile.start_rounds, profile.rounds
                )
                loads[label] = (artifact, load)
                artifact.path.unlink()
        if "serve" in parts:
            step("serving overhead")
            small = save(Mlp([64, 256, 256, 10]), workdir, "small", 64)
            serve = measure_overhead(load_gen, small, workdir, profile.seconds)
        if "batch" in parts:
            step("batching and health under load")
            wide = save(Mlp([512, 2048, 2048, 2048, 10]), workdir, "mlp", 512)
            batch = measure_batching(load_gen, wide, workdir, profile.seconds, profile.rounds)
        step("done")
        report = build_report(profile, load_gen.name, loads, starts, serve, batch)
        return render(report, profile, load_gen.name)


def _stepper() -> Callable[[str], None]:
    started = time.perf_counter()

    def step(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {what}", flush=True)

    return step


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the section, and update docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, short runs")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    section = run(QUICK if quick else FULL, parts)
    print(section)
    if args.no_write or parts != set(PARTS):
        print("(docs/benchmarks.md left alone: --no-write or a partial run)")
    else:
        write_section(section)
        print(f"wrote the {SECTION!r} section of {DOC}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_LOAD:
        child_load(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
