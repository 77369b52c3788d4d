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


def seed(model: str, count: int) -> dict[str, Any]:
    """``count`` indexed, validated versions of ``model``, as the sync would
    have written them, inserted with bulk_create."""
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
                status=ModelVersion.Status.VALID,
                validation={"load_ms": 12.5, "forward_ms": 0.4, "parameters": 35},
                validated_at=now,
            )
        )
    ModelVersion.objects.bulk_create(rows, batch_size=1000)
    return {"rows": count, "seconds": time.perf_counter() - started}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sync(aws_pid: int | None) -> dict[str, Any]:
    """Time ``registry_sync()`` twice: the first indexes every folder, the
    second finds nothing changed. For the first, also where the time went:
    the S3 listing (``scan``), describing folders (``describe``, in threads;
    the wall time from the first to the last), writing rows (``_upsert``),
    queueing Celery tasks (``_safe_delay``); how many S3 requests were made;
    and the CPU seconds used by this process and by the S3 server."""
    from dashboard.aws.clients import client
    from dashboard.registry import services
    from dashboard.registry.models import ModelVersion

    requests = {"count": 0}
    client("s3").meta.events.register(
        "before-send.s3", lambda **_: requests.__setitem__("count", requests["count"] + 1)
    )
    phases: dict[str, float] = {"scan": 0.0, "enqueue": 0.0, "index": 0.0}
    window = {"first": float("inf"), "last": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                if name == "describe":
                    window["first"] = min(window["first"], started)
                    window["last"] = max(window["last"], ended)
                else:
                    phases[name] += ended - started

        return wrapper

    # The sync looks these up in its module at call time; wrapping them there
    # times each phase without changing what the sync does.
    for name in ("scan", "describe"):
        if hasattr(services, name):
            setattr(services, name, timed(name, getattr(services, name)))
    if hasattr(services, "_safe_delay"):
        services._safe_delay = timed("enqueue", services._safe_delay)
    if hasattr(services, "_upsert"):
        services._upsert = timed("index", services._upsert)

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
    describe = max(0.0, window["last"] - window["first"]) if window["last"] else 0.0
    started = time.perf_counter()
    second = services.registry_sync()
    second_seconds = time.perf_counter() - started
    return {
        "first_seconds": first_seconds,
        "first": first.__dict__,
        "phases": {
            **first_phases,
            "describe": describe,
            "rest": max(0.0, first_seconds - describe - sum(first_phases.values())),
        },
        "pool_full": PoolFull.count,
        "s3_requests": first_requests,
        "cpu_seconds": cpu,
        "aws_cpu_seconds": aws_cpu,
        "second_seconds": second_seconds,
        "second": second.__dict__,
        "rows": ModelVersion.objects.count(),
        "validating": ModelVersion.objects.filter(status="validating").count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("users")
    p.add_argument("--password", required=True)
    p = sub.add_parser("seed")
    p.add_argument("--model", required=True)
    p.add_argument("--count", type=int, required=True)
    p = sub.add_parser("sync")
    p.add_argument("--aws-pid", type=int, default=None)
    args = parser.parse_args()
    _setup()
    if args.command == "users":
        result = users(args.password)
    elif args.command == "seed":
        result = seed(args.model, args.count)
    else:
        result = sync(args.aws_pid)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
