"""Dashboard-side steps of the monitoring benchmark, in a child process.

    python bench/_monitoring_django.py setup --password PW --service-arn ARN \
        --deployment 2026-11-20T10:00:00Z=2026.11.2 ...
    python bench/_monitoring_django.py cache-clear

Run with the benchmark stack's environment (its SQLite database, its embedded
AWS, its Redis). Each command prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _setup_django() -> None:
    import django

    sys.path.insert(0, str(REPO))
    django.setup()


def setup(password: str, service_arn: str, deployments: list[str]) -> dict[str, Any]:
    """A viewer, the environment iris/staging on ``service_arn``, and its
    succeeded deployments (``<ISO time>=<version>``: the markers)."""
    from dashboard.accounts.services import user_ensure
    from dashboard.deployments.models import Deployment
    from dashboard.deployments.services import environment_ensure

    user_ensure(username="bench", password=password, role="viewer")
    environment = environment_ensure(
        model="iris",
        name="staging",
        ssm_parameter="/models/iris/staging",
        service_arn=service_arn,
        service_url="http://127.0.0.1:9",
    )
    previous = ""
    for item in deployments:
        when, _, version = item.partition("=")
        at = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        Deployment.objects.create(
            environment=environment,
            from_version=previous,
            to_version=version,
            status="succeeded",
            pointer={"version": version},
            started_at=at - dt.timedelta(minutes=2),
            finished_at=at,
            # Where deployments record when they went live (docs/monitoring.md).
            **({"live_at": at} if hasattr(Deployment, "live_at") else {}),
        )
        previous = version
    type(environment).objects.filter(pk=environment.pk).update(promoted_version=previous)
    return {"environment": environment.pk, "deployments": len(deployments)}


def cache_clear() -> dict[str, Any]:
    from django.core.cache import cache

    cache.clear()
    return {"cleared": True}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--password", required=True)
    p.add_argument("--service-arn", required=True)
    p.add_argument("--deployment", action="append", default=[])
    sub.add_parser("cache-clear")
    args = parser.parse_args()
    _setup_django()
    if args.command == "setup":
        result = setup(args.password, args.service_arn, args.deployment)
    else:
        result = cache_clear()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
