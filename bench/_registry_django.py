"""Dashboard-side steps of the registry and upload benchmarks, in a child process.

    python bench/_registry_django.py users --password PW
    python bench/_registry_django.py seed --model M --count N
    python bench/_registry_django.py sync

Run by ``bench._registry_stack.Stack.django()`` with the stack's environment
(its SQLite database, its embedded AWS, its Redis). Each command prints one
JSON object on its last line of output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
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


def sync() -> dict[str, Any]:
    """Time ``registry_sync()`` twice: the first indexes every folder, the
    second finds nothing changed."""
    from dashboard.registry.models import ModelVersion
    from dashboard.registry.services import registry_sync

    started = time.perf_counter()
    first = registry_sync()
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = registry_sync()
    second_seconds = time.perf_counter() - started
    return {
        "first_seconds": first_seconds,
        "first": first.__dict__,
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
    sub.add_parser("sync")
    args = parser.parse_args()
    _setup()
    if args.command == "users":
        result = users(args.password)
    elif args.command == "seed":
        result = seed(args.model, args.count)
    else:
        result = sync()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
