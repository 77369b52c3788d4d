"""Benchmark of the inference service; writes the "Inference" section of docs/benchmarks.md.

    .venv/bin/python bench/bench_inference.py [--seconds 5] [--clients 32] [--no-write]

Starts ``python -m inference`` (the real server: uvicorn, JSON logs, metrics) on
a free port with a small MLP served from a pre-filled cache, so no AWS is
involved, and measures, each against a baseline taken in the same run on the
same machine:

1. serving overhead: /predict latency for one example from one client, against
   the model's own forward on the same example in this process, and against a
   bare HTTP round trip (/healthz);
2. batching: /predict throughput with many concurrent single-example clients,
   BATCHING=on against BATCHING=off;
3. health under load: /healthz latency while /predict is saturated, against
   /healthz on the idle server.

The load generator is a minimal asyncio HTTP/1.1 client with keep-alive
connections, to take as little CPU from the server as possible; on a small
machine the client and server still share the cores, which the table states.
The whole run takes well under three minutes.
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Inference"
FEATURES = 64
# Hidden widths: "small" costs far less than the HTTP handling per example; "wide"
# costs about as much, which is where coalescing requests pays off most.
WIDTHS = {"small": 256, "wide": 2048}


class Mlp(nn.Module):
    """FEATURES -> width -> width -> 10, softmax."""

    def __init__(self, width: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(FEATURES, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=-1)


def build_model(cache: Path, width: int) -> dict:
    """Save the MLP as TorchScript into the cache ``cache``; return its pointer."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Mlp(width).eval()), buffer)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / sha).write_bytes(data)
    pointer = {
        "schema": 1,
        "model": "bench-mlp",
        "version": "1",
        "bucket": "not-used",
        "key": "models/bench-mlp/1/model.pt",
        "s3_version_id": "not-used",
        "sha256": sha,
        "size": len(data),
        "format": "torchscript",
        "input": {"shape": [FEATURES], "dtype": "float32"},
    }
    return pointer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(cache: Path, pointer: dict, *, batching: bool, threads: int) -> Iterator[int]:
    """Run ``python -m inference``; yield its port once /readyz says ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "INFERENCE_"))}
    env.update(
        MODEL_POINTER=json.dumps(pointer),
        MODEL_CACHE_DIR=str(cache),
        HOST="127.0.0.1",
        PORT=str(port),
        BATCHING="on" if batching else "off",
        TORCH_NUM_THREADS=str(threads),
        LOG_LEVEL="WARNING",  # one access line per request would cost the server CPU
        PYTHONPATH=str(REPO),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "inference"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}")
            try:
                status, _ = asyncio.run(one_request(port, "GET", "/readyz"))
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the service did not become ready")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for this benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await self.reader.readexactly(int(match.group(1))) if match else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def raw_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


async def one_request(port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = await Connection.open(port)
    try:
        return await connection.request(raw_request(method, path))
    finally:
        connection.close()


def example_body(seed: int) -> bytes:
    row = [((seed * 31 + i * 17) % 100) / 50 - 1 for i in range(FEATURES)]
    return json.dumps({"inputs": [row]}).encode()


async def sequential_latency(port: int, raw: bytes, seconds: float) -> list[float]:
    """Latencies of back-to-back requests on one connection for ``seconds``."""
    connection = await Connection.open(port)
    latencies = []
    try:
        for _ in range(20):  # warm the connection and the server's code paths
            await connection.request(raw)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            status, _ = await connection.request(raw)
            latencies.append(time.perf_counter() - started)
            assert status == 200, status
    finally:
        connection.close()
    return latencies


async def saturate(
    port: int, clients: int, seconds: float, *, probe: bool
) -> tuple[int, list[float]]:
    """Run ``clients`` single-example /predict loops; return (requests done, probe latencies).

    With ``probe``, one more connection requests /healthz back to back meanwhile.
    """
    bodies = [raw_request("POST", "/predict", example_body(i)) for i in range(clients)]
    connections = [await Connection.open(port) for _ in range(clients)]
    done = 0
    stop = asyncio.Event()

    async def client(connection: Connection, raw: bytes) -> None:
        nonlocal done
        while not stop.is_set():
            status, _ = await connection.request(raw)
            assert status == 200, status
            done += 1

    probe_latencies: list[float] = []

    async def prober() -> None:
        connection = await Connection.open(port)
        raw = raw_request("GET", "/healthz")
        try:
            while not stop.is_set():
                started = time.perf_counter()
                await connection.request(raw)
                probe_latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)
        finally:
            connection.close()

    tasks = [asyncio.create_task(client(c, b)) for c, b in zip(connections, bodies, strict=True)]
    await asyncio.sleep(min(1.0, seconds / 4))  # ramp up before counting
    done = 0
    if probe:
        tasks.append(asyncio.create_task(prober()))
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    count, elapsed = done, time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    for connection in connections:
        connection.close()
    return round(count / elapsed), probe_latencies


def direct_forward_latency(pointer_cache: Path, sha: str, seconds: float, threads: int) -> float:
    """Median latency of the model's own forward on one example, in this process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module = torch.jit.load(str(pointer_cache / sha)).eval()
        x = torch.tensor([[((i * 17) % 100) / 50 - 1 for i in range(FEATURES)]])
        samples = []
        with torch.inference_mode():
            for _ in range(50):
                module(x)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                module(x)
                samples.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(samples)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def run(seconds: float, clients: int, threads: int) -> str:
    """Run every measurement; return the markdown section."""
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        cache = Path(tmp) / "cache"
        pointer = build_model(cache, WIDTHS["small"])
        wide = build_model(cache, WIDTHS["wide"])
        direct = direct_forward_latency(cache, pointer["sha256"], seconds / 2, threads)
        with server(cache, pointer, batching=True, threads=threads) as port:
            predict = asyncio.run(
                sequential_latency(port, raw_request("POST", "/predict", example_body(0)), seconds)
            )
            health_idle = asyncio.run(
                sequential_latency(port, raw_request("GET", "/healthz"), seconds / 2)
            )
            on_rps, health_loaded = asyncio.run(saturate(port, clients, seconds, probe=True))
        with server(cache, pointer, batching=False, threads=threads) as port:
            off_rps, _ = asyncio.run(saturate(port, clients, seconds, probe=False))
        wide_direct = direct_forward_latency(cache, wide["sha256"], seconds / 2, threads)
        with server(cache, wide, batching=True, threads=threads) as port:
            wide_on, _ = asyncio.run(saturate(port, clients, seconds, probe=False))
        with server(cache, wide, batching=False, threads=threads) as port:
            wide_off, _ = asyncio.run(saturate(port, clients, seconds, probe=False))

    predict_p50 = statistics.median(predict)
    health_p50 = statistics.median(health_idle)
    overhead = predict_p50 - direct
    rows = [
        (
            "/predict p50, 1 client, 1 example",
            ms(predict_p50),
            f"model forward alone {ms(direct)}",
            f"{predict_p50 / direct:.1f}x",
        ),
        (
            "serving overhead (/predict p50 - forward)",
            ms(overhead),
            f"bare HTTP round trip (/healthz p50) {ms(health_p50)}",
            f"{overhead / health_p50:.1f}x",
        ),
        (
            f"/predict throughput, {clients} clients, batching on (small model)",
            f"{on_rps} req/s",
            f"batching off {off_rps} req/s",
            f"{on_rps / off_rps:.2f}x",
        ),
        (
            f"/predict throughput, {clients} clients, batching on (wide model, "
            f"forward {ms(wide_direct)})",
            f"{wide_on} req/s",
            f"batching off {wide_off} req/s",
            f"{wide_on / wide_off:.2f}x",
        ),
        (
            "/healthz p50 while /predict is saturated",
            ms(statistics.median(health_loaded)),
            f"idle {ms(health_p50)}",
            f"{statistics.median(health_loaded) / health_p50:.1f}x",
        ),
        (
            "/healthz p99 while /predict is saturated",
            ms(percentile(health_loaded, 0.99)),
            f"idle {ms(percentile(health_idle, 0.99))}",
            f"{percentile(health_loaded, 0.99) / percentile(health_idle, 0.99):.1f}x",
        ),
    ]
    table = [
        "| measurement | value | baseline (same run) | ratio |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    cpus = len(os.sched_getaffinity(0))
    return "\n".join(
        [
            SECTION,
            "",
            f"`python bench/bench_inference.py` on {datetime.now(UTC):%Y-%m-%d}: "
            f"{platform.processor() or platform.machine()}, {cpus} CPUs shared by the server "
            f"and the load generator, torch {torch.__version__}, TORCH_NUM_THREADS={threads}, "
            f"{seconds:g} s per measurement. Models: TorchScript MLPs {FEATURES}-w-w-10, float32, "
            f"small w={WIDTHS['small']}, wide w={WIDTHS['wide']}, served from the cache by "
            "`python -m inference` (uvicorn, one worker, JSON logs at WARNING). "
            "Ratios compare against a baseline measured in the same run, so they travel "
            "between machines better than the absolute numbers.",
            "",
            *table,
            "",
        ]
    )


def write_section(section: str) -> None:
    """Replace (or append) the Inference section of docs/benchmarks.md, keeping the rest."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, and update docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=32, help="concurrent /predict clients")
    parser.add_argument("--threads", type=int, default=1, help="TORCH_NUM_THREADS of the server")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    section = run(args.seconds, args.clients, args.threads)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"wrote the {SECTION!r} section of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
