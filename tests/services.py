"""Find (or start) the real services the test suite uses; print shell exports.

``make test`` runs ``eval "$(python -m tests.services)"`` before pytest:

- PostgreSQL: DATABASE_URL if set, else postgres://postgres@127.0.0.1:5432/test.
  If it does not answer, try to start the local cluster (Debian's pg_ctlcluster).
  If it still does not answer, the suite runs on SQLite and the tests marked
  ``postgres`` are skipped with that reason.
- Redis: REDIS_URL if set, else redis://127.0.0.1:6379/15 (database 15, so the
  tests never touch a developer's queue). If none answers, start a private
  redis-server on a free port. Tests that need Redis skip only if that fails.

Messages go to stderr so the user sees them; only exports go to stdout.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def note(message: str) -> None:
    print(f"tests.services: {message}", file=sys.stderr)


def postgres_answers(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("select 1")
        return True
    except Exception:
        return False


def try_start_postgres() -> None:
    if not shutil.which("pg_ctlcluster"):
        return
    for conf in glob.glob("/etc/postgresql/*/main"):
        version = Path(conf).parent.name
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            check=False,
        )


def redis_answers(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis() -> str | None:
    if not shutil.which("redis-server"):
        return None
    port = free_port()
    subprocess.run(
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
            "--daemonize",
            "yes",
        ],
        capture_output=True,
        check=False,
    )
    url = f"redis://127.0.0.1:{port}/15"
    for _ in range(50):
        if redis_answers(url):
            return url
        time.sleep(0.1)
    return None


def main() -> int:
    exports: dict[str, str] = {}
    pg_url = os.environ.get("DATABASE_URL") or DEFAULT_PG
    if pg_url.startswith("postgres"):
        if not postgres_answers(pg_url):
            try_start_postgres()
            time.sleep(1)
        if postgres_answers(pg_url):
            exports["DATABASE_URL"] = pg_url
            note(f"PostgreSQL at {pg_url}")
        else:
            exports["DATABASE_URL"] = "sqlite:///:memory:"
            exports["MODELDECK_NO_POSTGRES"] = "1"
            note("PostgreSQL is absent: running on SQLite; tests marked 'postgres' are skipped")
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    if not redis_answers(redis_url):
        started = start_private_redis()
        if started:
            note(f"started a private redis-server at {started}")
            redis_url = started
        else:
            exports["MODELDECK_NO_REDIS"] = "1"
            note("Redis is absent and could not be started: tests marked 'redis' are skipped")
    exports["REDIS_URL"] = redis_url
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
