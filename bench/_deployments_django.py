"""Dashboard-side steps of the deployments benchmark, in a child process.

    python bench/_deployments_django.py users --password PW
    python bench/_deployments_django.py link --position N NAME=ARN=URL ...

Run by ``bench._registry_stack.Stack.django``-style calls with the stack's
environment (its SQLite database, its embedded AWS, its Redis). Each command
prints one JSON object on its last line of output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "iris"


def _setup() -> None:
    import django

    sys.path.insert(0, str(REPO))
    django.setup()


def users(password: str) -> dict[str, Any]:
    """An admin (who may promote everywhere and read every page) and its API token."""
    from dashboard.accounts.services import token_create, user_ensure

    user = user_ensure(username="bench", password=password, role="admin")
    _, key = token_create(user=user, name="bench")
    return {"username": "bench", "token": key}


def link(services: list[str], position: int) -> dict[str, Any]:
    """Environments of ``MODEL`` for App Runner services (``NAME=ARN=URL``),
    each reading the pointer /models/MODEL/NAME, as the local seed links
    staging and production; then the pointers' starting points are recorded."""
    from dashboard.deployments.services import environment_ensure, environments_refresh_pointers

    linked = []
    for offset, item in enumerate(services):
        name, arn, url = item.split("=", 2)
        environment_ensure(
            model=MODEL,
            name=name,
            ssm_parameter=f"/models/{MODEL}/{name}",
            service_arn=arn,
            service_url=url,
            position=position + offset,
        )
        linked.append(name)
    environments_refresh_pointers()
    return {"linked": linked}


def profile_page(path: str, views: int) -> dict[str, Any]:
    """Profile ``views`` views of ``path`` in this process (signed in as bench):
    the top functions by cumulative time, and the queries per view."""
    import cProfile
    import io
    import pstats

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="bench"))
    assert client.get(path).status_code == 200  # warm: the live checks cached
    profile = cProfile.Profile()
    with CaptureQueriesContext(connection) as queries:
        profile.enable()
        for _ in range(views):
            client.get(path)
        profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
    return {"queries_per_view": len(queries) / views, "profile": out.getvalue()}


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("users")
    p.add_argument("--password", required=True)
    p = sub.add_parser("profile-page")
    p.add_argument("--path", default="/models/")
    p.add_argument("--views", type=int, default=10)
    p = sub.add_parser("link")
    p.add_argument("--position", type=int, default=0)
    p.add_argument("services", nargs="+")
    args = parser.parse_args()
    _setup()
    if args.command == "users":
        result = users(args.password)
    elif args.command == "profile-page":
        result = profile_page(args.path, args.views)
    else:
        result = link(args.services, args.position)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
