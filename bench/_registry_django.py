"""Dashboard-side steps of the registry and upload benchmarks, in a child process.

    python bench/_registry_django.py users --password PW
    python bench/_registry_django.py seed --model M --count N
    python bench/_registry_django.py sync [--aws-pid PID]

Run by ``bench._registry_stack.Stack.django()`` with the stack's environment
(its SQLite database, its embedded AWS, its Redis). Each command prints one
JSON object on its last line of output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _setup() -> None:
    import django

    sys.path.insert(0, str(REPO))
    django.setup()


def users(password: str) -> dict[str, Any]:
    """An admin (who can upload and read) and an API token for it."""
    from dashboard.accounts.services import token_create, user_ensure

    user = user_ensure(username="bench", password=password, role="admin")
    _, key = token_create(user=user, name="bench")
    return {"username": "bench", "token": key}


def version_name(i: int) -> str:
    return f"2026.{i:05d}"


def seed(
    model: str, count: int, invalid_every: int = 0, environments: bool = False
) -> dict[str, Any]:
    """``count`` indexed, validated versions of ``model``, as the sync would
    have written them, inserted with bulk_create. With ``invalid_every`` N,
    every Nth version (counting from 7) is invalid instead, so that a status
    filter has a rare status to find. With ``environments``, the model gets a
    staging and a production environment serving two of its versions (their
    services' URLs refuse connections at once: nothing answers there)."""
    from django.utils import timezone

    from dashboard.registry.models import ModelVersion

    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    now = timezone.now()
    started = time.perf_counter()
    rows = []
    for i in range(1, count + 1):
        version = version_name(i)
        sha = hashlib.sha256(f"{model}/{version}".encode()).hexdigest()
        rows.append(
            ModelVersion(
                model_name=model,
                version=version,
                artifact="model.pt",
                key=f"models/{model}/{version}/model.pt",
                format="torchscript",
                size=1_000_000 + i,
                sha256=sha,
                s3_version_id=sha[:32],
                fingerprint=sha[::-1],
                input_shape=[4],
                input_dtype="float32",
                created_at=base + dt.timedelta(minutes=i),
                created_by="trainer",
                notes=f"nightly build {i}",
                metrics={"accuracy": round(0.9 + (i % 100) / 1000, 3)},
                has_manifest=True,
                status=(
                    ModelVersion.Status.INVALID
                    if invalid_every and i % invalid_every == 7
                    else ModelVersion.Status.VALID
                ),
                validation={"load_ms": 12.5, "forward_ms": 0.4, "parameters": 35},
                validated_at=now,
            )
        )
    ModelVersion.objects.bulk_create(rows, batch_size=2000)
    seconds = time.perf_counter() - started
    if environments:
        from dashboard.deployments.services import environment_ensure

        for position, (name, version) in enumerate(
            (("staging", version_name(count)), ("production", version_name(count - 10)))
        ):
            environment = environment_ensure(
                model=model,
                name=name,
                ssm_parameter=f"/models/{model}/{name}",
                service_arn=(
                    f"arn:aws:apprunner:us-east-1:000000000000:service/{model}-{name}/"
                    "0123456789abcdef0123456789abcdef"
                ),
                service_url="http://127.0.0.1:9",
                position=position,
            )
            environment.promoted_version = version
            environment.save(update_fields=["promoted_version"])
    return {"rows": count, "seconds": seconds}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sync(aws_pid: int | None) -> dict[str, Any]:
    """Time ``registry_sync()`` twice: the first indexes every folder, the
    second finds nothing changed. For the first, also where the time went:
    the S3 listing (``scan``), writing rows (``_create``/``_refresh``),
    queueing Celery tasks (``_send``); how many S3 requests were made; and the
    CPU seconds used by this process and by the S3 server.

    Then what a worker does next, here in this process: read every pending
    manifest (``versions_describe``, batch by batch, two batches at a time as
    the worker's two processes would) and queue the validations."""
    from concurrent.futures import ThreadPoolExecutor

    from dashboard.aws.clients import client
    from dashboard.registry import services
    from dashboard.registry.models import ModelVersion

    requests = {"count": 0}
    client("s3").meta.events.register(
        "before-send.s3", lambda **_: requests.__setitem__("count", requests["count"] + 1)
    )
    phases: dict[str, float] = {"scan": 0.0, "enqueue": 0.0, "index": 0.0}
    queued = {"tasks": 0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - started

        return wrapper

    def counted(fn: Any) -> Any:
        def wrapper(messages: list[Any]) -> Any:
            queued["tasks"] += len(messages)
            return fn(messages)

        return wrapper

    # The sync looks these up in its module at call time; wrapping them there
    # times each phase without changing what the sync does.
    services.scan = timed("scan", services.scan)
    services._create = timed("index", services._create)
    services._refresh = timed("index", services._refresh)
    services._send = timed("enqueue", counted(services._send))

    class PoolFull(logging.Handler):
        """Counts urllib3's "Connection pool is full, discarding connection":
        each is a new TCP connection because the client's pool is smaller
        than the sync's thread pool."""

        count = 0

        def emit(self, record: logging.LogRecord) -> None:
            if "pool is full" in record.getMessage():
                PoolFull.count += 1

    logging.getLogger("urllib3.connectionpool").addHandler(PoolFull())

    aws_cpu = _cpu_seconds(aws_pid) if aws_pid else 0.0
    cpu = time.process_time()
    started = time.perf_counter()
    first = services.registry_sync()
    first_seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    aws_cpu = (_cpu_seconds(aws_pid) - aws_cpu) if aws_pid else 0.0
    first_requests = requests["count"]
    first_phases = dict(phases)
    first_tasks = queued["tasks"]

    pending = list(
        ModelVersion.objects.filter(manifest_pending=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    batches = [
        pending[i : i + services.DESCRIBE_BATCH]
        for i in range(0, len(pending), services.DESCRIBE_BATCH)
    ]
    phases["enqueue"] = 0.0
    queued["tasks"] = 0
    requests["count"] = 0
    aws_cpu_worker = _cpu_seconds(aws_pid) if aws_pid else 0.0
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        described = sum(pool.map(lambda ids: services.versions_describe(version_ids=ids), batches))
    describe_seconds = time.perf_counter() - started
    aws_cpu_worker = (_cpu_seconds(aws_pid) - aws_cpu_worker) if aws_pid else 0.0

    second_cpu = time.process_time()
    aws_cpu_second = _cpu_seconds(aws_pid) if aws_pid else 0.0
    started = time.perf_counter()
    second = services.registry_sync()
    second_seconds = time.perf_counter() - started
    second_cpu = time.process_time() - second_cpu
    aws_cpu_second = (_cpu_seconds(aws_pid) - aws_cpu_second) if aws_pid else 0.0
    return {
        "first_seconds": first_seconds,
        "first": first.__dict__,
        "phases": {
            **first_phases,
            "rest": max(0.0, first_seconds - sum(first_phases.values())),
        },
        "first_tasks": first_tasks,
        "pool_full": PoolFull.count,
        "s3_requests": first_requests,
        "cpu_seconds": cpu,
        "aws_cpu_seconds": aws_cpu,
        "describe_seconds": describe_seconds,
        "described": described,
        "describe_requests": requests["count"],
        "describe_enqueue_seconds": phases["enqueue"],
        "validations_queued": queued["tasks"],
        "describe_aws_cpu_seconds": aws_cpu_worker,
        "second_seconds": second_seconds,
        "second_cpu_seconds": second_cpu,
        "second_aws_cpu_seconds": aws_cpu_second,
        "second": second.__dict__,
        "rows": ModelVersion.objects.count(),
        "validating": ModelVersion.objects.filter(status="validating").count(),
    }


def analyze() -> dict[str, Any]:
    """Refresh PostgreSQL's statistics after a bulk seed (autovacuum would
    soon); SQLite is left as a fresh local database would be."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE registry_modelversion")
    return {"vendor": connection.vendor}


def dbversion() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SHOW server_version"
            if connection.vendor == "postgresql"
            else "SELECT sqlite_version()"
        )
        return {"version": str(cursor.fetchone()[0]).split()[0]}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("users")
    p.add_argument("--password", required=True)
    p = sub.add_parser("seed")
    p.add_argument("--model", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--invalid-every", type=int, default=0)
    p.add_argument("--environments", action="store_true")
    sub.add_parser("analyze")
    sub.add_parser("dbversion")
    p = sub.add_parser("sync")
    p.add_argument("--aws-pid", type=int, default=None)
    args = parser.parse_args()
    _setup()
    if args.command == "users":
        result = users(args.password)
    elif args.command == "seed":
        result = seed(args.model, args.count, args.invalid_every, args.environments)
    elif args.command == "analyze":
        result = analyze()
    elif args.command == "dbversion":
        result = dbversion()
    else:
        result = sync(args.aws_pid)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
