"""Benchmark of the registry's version list against MLflow's; writes the
"Versions list" part of the "Registry" section of docs/benchmarks.md.

    .venv/bin/python bench/bench_registry.py [--count 10000] [--requests 50]
                                             [--no-browser] [--no-write]

Everything runs on this machine, on 127.0.0.1 only, and both sides are
measured in the same run, interleaved request by request:

1. API: the first page of 100 versions of a model with ``--count`` versions,
   ours (``GET /api/models/<m>/versions?page_size=100``, the dashboard under
   gunicorn with one worker, SQLite, rows inserted with bulk_create) against
   MLflow's ``GET /api/2.0/mlflow/model-versions/search`` (``mlflow server``
   with one worker, SQLite); then the second page (our ``page=2``, MLflow's
   ``page_token``). Median and p95 over ``--requests`` requests each, after
   a warm-up.
2. Browser (Debian's chromium via Playwright): from navigation start to the
   frame that paints the newest version's row on our model page and on
   MLflow's model page, then from the click on "next page" to the frame with
   the next page's first row laid out (both pages keep the scroll position,
   so that row may be above the viewport).
3. A full ``registry_sync()`` of ``--count`` version folders (manifest.json
   and a tiny artifact each) put into the embedded S3 (moto's server).

MLflow lives in its own virtualenv under /tmp, installed by this script when
missing (``pip install 'mlflow==3.17.*'``); its database of ``--count``
versions is built once and cached under /tmp (see ``_registry_mlflow.py``).
MLflow's background job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``) is
turned off: its idle consumers take CPU from the one server worker on a small
machine, which would flatter us.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._registry_doc import table, write_subsection  # noqa: E402
from bench._registry_stack import (  # noqa: E402
    BUCKET,
    Service,
    Stack,
    ensure_debian_package,
    free_port,
    http_ok,
)

MODEL = "bench"
SYNC_MODEL = "synced"
MLFLOW_SPEC = "mlflow==3.17.*"
MLFLOW_VENV = Path("/tmp/modeldeck-mlflow-venv")
CACHE = Path("/tmp/modeldeck-bench-cache")
PAGE = 100
# Versions MLflow's own client creates one by one (timed); the rest are copies.
MLFLOW_API_VERSIONS = 500
BROWSER_REPEATS = 5
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TITLE = "Versions list (bench_registry.py)"
# The scale run: our own list at 100k versions against the same list at 1k,
# in the same database and run (the baseline the ratio divides by).
SMALL, SMALL_COUNT = "small", 1_000
BIG, BIG_COUNT = "big", 100_000
INVALID_EVERY = 100  # 1% of the versions are invalid: a rare status to filter on
SCALE_REQUESTS = 20


def version_name(i: int) -> str:
    return f"2026.{i:05d}"


# --- MLflow ---------------------------------------------------------------------


def ensure_mlflow() -> tuple[Path, str]:
    """The MLflow virtualenv's python and MLflow's version; installs it when missing."""
    python = MLFLOW_VENV / "bin" / "python"

    def version() -> str | None:
        if not python.exists():
            return None
        result = subprocess.run(
            [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    found = version()
    if found is None or not found.startswith("3.17."):
        print(f"installing {MLFLOW_SPEC} into {MLFLOW_VENV} (once)", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", MLFLOW_SPEC],
            check=True,
        )
        found = version()
        if found is None:
            raise RuntimeError(f"could not install {MLFLOW_SPEC}")
    return python, found


def mlflow_database(python: Path, mlflow_version: str, count: int) -> tuple[Path, dict[str, Any]]:
    """A cached MLflow SQLite database with ``count`` versions of MODEL, and
    how long building it took."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"mlflow-{mlflow_version}-{MODEL}-{count}-api{MLFLOW_API_VERSIONS}"
    db, stats_path = CACHE / f"{stem}.sqlite", CACHE / f"{stem}.json"
    if db.exists() and stats_path.exists():
        return db, {**json.loads(stats_path.read_text()), "cached": True}
    partial = db.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    print(f"building MLflow's registry of {count} versions (cached afterwards)", flush=True)
    result = subprocess.run(
        [
            str(python),
            str(REPO / "bench" / "_registry_mlflow.py"),
            "--db",
            str(partial),
            "--model",
            MODEL,
            "--count",
            str(count),
            "--api",
            str(MLFLOW_API_VERSIONS),
        ],
        capture_output=True,
        text=True,
        cwd=CACHE,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building MLflow's database failed:\n{result.stderr[-3000:]}")
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    stats_path.write_text(json.dumps(stats))
    partial.rename(db)
    return db, {**stats, "cached": False}


def start_mlflow(stack: Stack, python: Path, cached_db: Path) -> tuple[Service, str]:
    db = stack.root / "mlflow.sqlite"
    shutil.copyfile(cached_db, db)
    port = free_port()
    workdir = stack.root / "mlflow"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DJANGO_", "MLFLOW_"))}
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"})
    service = stack.start(
        "mlflow",
        [
            str(python.parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    stack.wait(service, lambda: http_ok(url + "/health"), 120)
    return service, url


# --- API latency ----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def api_latency(
    dashboard: str, token: str, mlflow: str, count: int, requests: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per request of each of the four calls, interleaved round by round."""
    import httpx

    headers = {"Authorization": f"Token {token}"}
    ours_url = f"{dashboard}/api/models/{MODEL}/versions"
    theirs_url = f"{mlflow}/api/2.0/mlflow/model-versions/search"
    theirs_params = {"filter": f"name='{MODEL}'", "max_results": str(PAGE)}
    with httpx.Client(timeout=60) as ours, httpx.Client(timeout=60) as theirs:
        first = theirs.get(theirs_url, params=theirs_params).json()
        token2 = first.get("next_page_token")
        if not token2:
            raise RuntimeError(f"MLflow returned no next_page_token: {str(first)[:300]}")
        calls = {
            "ours_page1": lambda: ours.get(
                ours_url, params={"page_size": PAGE, "page": 1}, headers=headers
            ),
            "mlflow_page1": lambda: theirs.get(theirs_url, params=theirs_params),
            "ours_page2": lambda: ours.get(
                ours_url, params={"page_size": PAGE, "page": 2}, headers=headers
            ),
            "mlflow_page2": lambda: theirs.get(
                theirs_url, params={**theirs_params, "page_token": token2}
            ),
        }
        expected_first = {
            "ours_page1": version_name(count),
            "ours_page2": version_name(count - PAGE),
            "mlflow_page1": str(count),
            "mlflow_page2": str(count - PAGE),
        }
        for name, call in calls.items():  # warm-up, and check the answers are right
            for _ in range(10):
                response = call()
                response.raise_for_status()
            body = response.json()
            items = body["items"] if name.startswith("ours") else body["model_versions"]
            got = items[0]["version"]
            if len(items) != PAGE or got != expected_first[name]:
                raise RuntimeError(f"{name}: {len(items)} items starting at {got}")
        samples: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        for round_ in range(requests):
            # Alternate who goes first so neither always follows the other.
            for name in order if round_ % 2 == 0 else reversed(order):
                started = time.perf_counter()
                response = calls[name]()
                response.raise_for_status()
                response.read()
                samples[name].append(time.perf_counter() - started)
    return {"samples": samples}


# --- Browser --------------------------------------------------------------------

# Marks when the first element matching SELECTOR is laid out, then waits for
# the next animation frame (the frame that paints it).
FIRST_ROW_SCRIPT = """
(() => {
  const selector = %s;
  const check = () => {
    const el = document.querySelector(selector);
    if (el && el.getClientRects().length) {
      observer.disconnect();
      requestAnimationFrame(() => { window.__firstRowAt = performance.now(); });
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, {childList: true, subtree: true, attributes: true,
                              attributeFilter: ["href", "data-version"]});
})();
"""

# Clicks BUTTON and resolves with the milliseconds until ROW is painted.
NEXT_PAGE_SCRIPT = """
async ([button, row]) => {
  const target = document.querySelector(button);
  if (!target) throw new Error("no next-page control " + button);
  return await new Promise((resolve, reject) => {
    let t0 = 0;
    const timer = setTimeout(() => reject(new Error("next page never showed " + row)), 30000);
    const check = () => {
      const el = document.querySelector(row);
      if (el && el.getClientRects().length) {
        observer.disconnect();
        clearTimeout(timer);
        requestAnimationFrame(() => resolve(performance.now() - t0));
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(document, {childList: true, subtree: true, attributes: true,
                                attributeFilter: ["href", "data-version"]});
    t0 = performance.now();
    target.click();
  });
}
"""


@dataclass(frozen=True)
class UiSide:
    """Where one UI lists versions, and the CSS selectors that find its rows."""

    url: str
    first: str  # the newest version's row
    next_button: str
    next_row: str  # the first row of the next page
    page_size: int


def browser_timings(dashboard: str, password: str, mlflow: str, count: int) -> dict[str, Any]:
    """Milliseconds to the first row and to the next page's first row, both UIs."""
    from playwright.sync_api import sync_playwright

    ours_page_size = 50  # dashboard.registry.views.PAGE_SIZE
    mlflow_page_size = 25  # what MLflow's model page shows
    mlflow_row = '[data-testid="model-version-table"] a[href="#/models/' + MODEL + '/versions/{}"]'
    sides = {
        "ours": UiSide(
            url=f"{dashboard}/models/{MODEL}/",
            first=f'#versions tbody tr[data-version="{version_name(count)}"]',
            next_button="#versions-block a.next-page",
            next_row=f'#versions tbody tr[data-version="{version_name(count - ours_page_size)}"]',
            page_size=ours_page_size,
        ),
        "mlflow": UiSide(
            url=f"{mlflow}/#/models/{MODEL}",
            first=mlflow_row.format(count),
            next_button=(
                '[data-testid="model-view-pagination-section"] '
                'button[data-component-id$="next_page"]'
            ),
            next_row=mlflow_row.format(count - mlflow_page_size),
            page_size=mlflow_page_size,
        ),
    }
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            for name, side in sides.items():
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_init_script(FIRST_ROW_SCRIPT % json.dumps(side.first))
                page = context.new_page()
                page.set_default_timeout(60_000)
                if name == "ours":
                    page.goto(f"{dashboard}/login/")
                    page.fill("input[name=username]", "bench")
                    page.fill("input[name=password]", password)
                    page.click("button[type=submit]")
                    page.wait_for_url("**/models/")
                first: list[float] = []
                nexts: list[float] = []
                for _ in range(1 + BROWSER_REPEATS):
                    page.goto("about:blank")
                    page.goto(side.url, wait_until="commit")
                    page.wait_for_function("window.__firstRowAt !== undefined")
                    first.append(float(page.evaluate("window.__firstRowAt")))
                    page.wait_for_selector(side.next_button, state="visible")
                    clicked = page.evaluate(NEXT_PAGE_SCRIPT, [side.next_button, side.next_row])
                    nexts.append(float(clicked))
                context.close()
                results[name] = {
                    "cold_first": first[0],
                    "first": first[1:],
                    "next": nexts[1:],
                    "page_size": side.page_size,
                }
        finally:
            browser.close()
    return results


# --- Scale: 100k versions ----------------------------------------------------------


def seed_sha(model: str, i: int) -> str:
    """The SHA-256 that _registry_django.seed gives version ``i`` of ``model``."""
    return hashlib.sha256(f"{model}/{version_name(i)}".encode()).hexdigest()


def scale_queries(model: str, count: int) -> dict[str, tuple[dict[str, str], str]]:
    """label -> (query parameters, the version the answer must start with)."""
    newest_invalid = max(i for i in range(count - 200, count + 1) if i % INVALID_EVERY == 7)
    middle = count // 2
    newest_nine = max(i for i in range(count - 2000, count + 1) if str(i).startswith("9"))
    return {
        "newest first (default)": ({}, version_name(count)),
        "oldest first": ({"sort": "oldest"}, version_name(1)),
        "by version name": ({"sort": "version"}, version_name(1)),
        "largest first": ({"sort": "-size"}, version_name(count)),
        "status=invalid (1% of versions)": ({"status": "invalid"}, version_name(newest_invalid)),
        "status=valid, largest first": (
            {"status": "valid", "sort": "-size"},
            version_name(count),
        ),
        "serving in production": ({"environment": "production"}, version_name(count - 10)),
        "search, rare (a SHA-256 prefix)": (
            {"q": seed_sha(model, middle)[:10]},
            version_name(middle),
        ),
        "search, common (11% of versions)": ({"q": "nightly build 9"}, version_name(newest_nine)),
    }


def scale_api(dashboard: str, token: str, requests: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per request of each query on SMALL and BIG, interleaved; plus
    the next page by cursor. Every answer's first version is checked."""
    import httpx

    headers = {"Authorization": f"Token {token}"}
    samples: dict[str, dict[str, list[float]]] = {}
    with httpx.Client(timeout=60, headers=headers) as http:
        calls: list[tuple[str, str, dict[str, str], str]] = []
        for model, count in ((SMALL, SMALL_COUNT), (BIG, BIG_COUNT)):
            url = f"{dashboard}/api/models/{model}/versions"
            for label, (params, first) in scale_queries(model, count).items():
                calls.append((label, model, {"page_size": str(PAGE), **params}, first))
            start = http.get(url, params={"page_size": str(PAGE)}).json()
            calls.append(
                (
                    "next page (cursor)",
                    model,
                    {"page_size": str(PAGE), "cursor": start["next"]},
                    version_name(count - PAGE),
                )
            )
        for label, model, params, first in calls:  # warm-up, and check the answers
            url = f"{dashboard}/api/models/{model}/versions"
            for _ in range(3):
                response = http.get(url, params=params)
                response.raise_for_status()
            items = response.json()["items"]
            if not items or items[0]["version"] != first:
                got = items[0]["version"] if items else None
                raise RuntimeError(f"{model} {label}: starts at {got}, not {first}")
            samples.setdefault(label, {SMALL: [], BIG: []})
        for round_ in range(requests):
            for label, model, params, _ in calls if round_ % 2 == 0 else reversed(calls):
                url = f"{dashboard}/api/models/{model}/versions"
                started = time.perf_counter()
                response = http.get(url, params=params)
                response.raise_for_status()
                samples[label][model].append(time.perf_counter() - started)
    return samples


def scale_browser(dashboard: str, password: str) -> dict[str, dict[str, Any]]:
    """Milliseconds to the first row painted on model pages of SMALL and BIG,
    default and filtered, warm cache (median of BROWSER_REPEATS), and the
    first visit."""
    from playwright.sync_api import sync_playwright

    middle = BIG_COUNT // 2
    pages = {
        "model page, newest first": ("", BIG_COUNT, SMALL_COUNT),
        "model page, status=valid, largest first": (
            "?status=valid&sort=-size",
            BIG_COUNT,
            SMALL_COUNT,
        ),
        "model page, serving in production": (
            "?environment=production",
            BIG_COUNT - 10,
            SMALL_COUNT - 10,
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            jobs: list[tuple[str, str, str, str]] = []
            for label, (query, big_first, small_first) in pages.items():
                jobs.append(
                    (label, SMALL, f"{dashboard}/models/{SMALL}/{query}", version_name(small_first))
                )
                jobs.append(
                    (label, BIG, f"{dashboard}/models/{BIG}/{query}", version_name(big_first))
                )
            rare = seed_sha(BIG, middle)[:10]
            jobs.append(
                (
                    "model page, search (a SHA-256 prefix)",
                    BIG,
                    f"{dashboard}/models/{BIG}/?q={rare}",
                    version_name(middle),
                )
            )
            rare_small = seed_sha(SMALL, SMALL_COUNT // 2)[:10]
            jobs.append(
                (
                    "model page, search (a SHA-256 prefix)",
                    SMALL,
                    f"{dashboard}/models/{SMALL}/?q={rare_small}",
                    version_name(SMALL_COUNT // 2),
                )
            )
            for label, model, url, first in jobs:
                selector = f'#versions tbody tr[data-version="{first}"]'
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_init_script(FIRST_ROW_SCRIPT % json.dumps(selector))
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{dashboard}/login/")
                page.fill("input[name=username]", "bench")
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url("**/models/")
                timings: list[float] = []
                for _ in range(1 + BROWSER_REPEATS):
                    page.goto("about:blank")
                    page.goto(url, wait_until="commit")
                    page.wait_for_function("window.__firstRowAt !== undefined")
                    timings.append(float(page.evaluate("window.__firstRowAt")))
                context.close()
                results.setdefault(label, {})[model] = {"cold": timings[0], "warm": timings[1:]}
        finally:
            browser.close()
    return results


def postgres_admin_url() -> str | None:
    """A PostgreSQL server to run the scale run on too: BENCH_POSTGRES_URL, or
    the DATABASE_URL the environment names when it is PostgreSQL."""
    for name in ("BENCH_POSTGRES_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith("postgres"):
            return url
    return None


def postgres_database(admin_url: str, name: str) -> str | None:
    """A fresh database ``name`` on the server of ``admin_url``; its URL."""
    try:
        import psycopg
    except ImportError:
        return None
    from urllib.parse import urlsplit, urlunsplit

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL is not usable for the scale run: {exc}", flush=True)
        return None
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def drop_postgres_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scale_run(
    stack: Stack, password: str, token: str, requests: int, browser: bool
) -> dict[str, Any]:
    """Seed SMALL and BIG (in the stack's SQLite database, beside MODEL), and
    measure the API and the page; then the API again on PostgreSQL when a
    server is there."""
    result: dict[str, Any] = {}
    for model, count in ((SMALL, SMALL_COUNT), (BIG, BIG_COUNT)):
        print(f"seeding {count} versions of {model}", flush=True)
        result[f"seed_{model}"] = stack.django(
            "seed",
            "--model",
            model,
            "--count",
            str(count),
            "--invalid-every",
            str(INVALID_EVERY),
            "--environments",
            timeout=1800,
        )
    print("measuring the API at scale (SQLite)", flush=True)
    result["api_sqlite"] = scale_api(stack.dashboard_url, token, requests)
    if browser:
        print("measuring the page at scale", flush=True)
        try:
            result["browser"] = scale_browser(stack.dashboard_url, password)
        except Exception as exc:
            result["browser"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    admin = postgres_admin_url()
    name = f"modeldeck_bench_registry_{os.getpid()}"
    url = postgres_database(admin, name) if admin else None
    if url is None:
        result["api_postgres"] = "no PostgreSQL server (set BENCH_POSTGRES_URL)"
        return result
    try:
        env = {"DATABASE_URL": url}
        stack.migrate(env=env)
        pg_token = stack.django("users", "--password", password, env=env)["token"]
        for model, count in ((SMALL, SMALL_COUNT), (BIG, BIG_COUNT)):
            print(f"seeding {count} versions of {model} (PostgreSQL)", flush=True)
            stack.django(
                "seed",
                "--model",
                model,
                "--count",
                str(count),
                "--invalid-every",
                str(INVALID_EVERY),
                "--environments",
                env=env,
                timeout=1800,
            )
        stack.django("analyze", env=env)
        stack.start_dashboard(workers=1, threads=4, name="web-postgres", env=env)
        print("measuring the API at scale (PostgreSQL)", flush=True)
        result["api_postgres"] = scale_api(stack.urls["web-postgres"], pg_token, requests)
        result["postgres_version"] = stack.django("dbversion", env=env)["version"]
    finally:
        for service in stack.services:
            if service.name == "web-postgres":
                service.stop()
        if admin:
            drop_postgres_database(admin, name)
    return result


# --- Sync -----------------------------------------------------------------------


def fill_s3(stack: Stack, count: int) -> float:
    """Put ``count`` version folders of SYNC_MODEL into the embedded S3; return seconds.

    Plain PUTs over one keep-alive pool rather than boto3: moto's server does
    not check signatures, and botocore's per-request work would double the
    time of this setup step, which is not what is measured."""
    import httpx

    artifact = b"tiny artifact bytes " * 3
    sha = hashlib.sha256(artifact).hexdigest()
    http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=16))

    def put(i: int) -> None:
        version = version_name(i)
        base = f"{stack.aws_url}/{BUCKET}/models/{SYNC_MODEL}/{version}/"
        manifest = {
            "schema": 1,
            "model": SYNC_MODEL,
            "version": version,
            "artifact": "model.pt",
            "format": "torchscript",
            "sha256": sha,
            "size": len(artifact),
            "input": {"shape": [4], "dtype": "float32"},
            "created_at": f"2026-01-01T00:00:{i % 60:02d}Z",
            "created_by": "trainer",
            "notes": f"nightly build {i}",
            "metrics": {"accuracy": 0.9},
        }
        http.put(base + "model.pt", content=artifact).raise_for_status()
        http.put(
            base + "manifest.json",
            content=json.dumps(manifest).encode(),
            headers={"Content-Type": "application/json"},
        ).raise_for_status()

    started = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put, range(1, count + 1)))
    finally:
        http.close()
    return time.perf_counter() - started


# --- Report -------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(data: dict[str, Any]) -> str:
    count = data["count"]
    s = data["api"]["samples"]
    rows = []
    for page in ("page1", "page2"):
        ours, theirs = s[f"ours_{page}"], s[f"mlflow_{page}"]
        label = "first page" if page == "page1" else "next page (page 2 / page_token)"
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append(
            [
                f"API, {label} of {PAGE}, median",
                ms(a),
                ms(b),
                f"{a / b:.2f}x",
                "≤ 0.5x",
                verdict(a / b <= 0.5),
            ]
        )
        a, b = percentile(ours, 0.95), percentile(theirs, 0.95)
        rows.append([f"API, {label} of {PAGE}, p95", ms(a), ms(b), f"{a / b:.2f}x", "-", "-"])
    browser = data.get("browser")
    if isinstance(browser, dict):
        o, m = browser["ours"], browser["mlflow"]
        for key, label in (
            ("first", "first version row painted"),
            ("next", "next page's first row"),
        ):
            a, b = statistics.median(o[key]), statistics.median(m[key])
            rows.append(
                [
                    f"browser, {label}, median of {len(o[key])}",
                    f"{a:.0f} ms",
                    f"{b:.0f} ms",
                    f"{a / b:.2f}x",
                    "≤ 0.5x",
                    verdict(a / b <= 0.5),
                ]
            )
        a, b = o["cold_first"], m["cold_first"]
        rows.append(
            [
                "browser, first row on a first visit (cold cache; ours right after signing in)",
                f"{a:.0f} ms",
                f"{b:.0f} ms",
                f"{a / b:.2f}x",
                "-",
                "-",
            ]
        )
    sync = data["sync"]
    rows.append(
        [
            f"full sync of {count} new version folders from S3 (`registry_sync()`)",
            f"{sync['first_seconds']:.1f} s",
            "-",
            "-",
            "< 30 s",
            verdict(sync["first_seconds"] < 30),
        ]
    )
    rows.append(
        [
            f"then a worker reads their {sync['described']} manifests and queues "
            f"{sync['validations_queued']} validations",
            f"{sync['describe_seconds']:.1f} s",
            "-",
            "-",
            "-",
            "-",
        ]
    )
    rows.append(
        [
            f"re-sync, nothing changed ({sync['second']['unchanged']} unchanged)",
            f"{sync['second_seconds']:.1f} s",
            "-",
            "-",
            "≈ 5 s or better",
            verdict(sync["second_seconds"] <= 6),
        ]
    )
    phases = sync["phases"]
    breakdown = (
        f"Where the first sync's {sync['first_seconds']:.1f} s went: listing the bucket "
        f"{phases['scan']:.1f} s, writing the {sync['first']['created']} new rows from the "
        f"listing alone (bulk inserts, one transaction per model) {phases['index']:.1f} s, "
        f"queueing {sync['first_tasks']} tasks that read the manifests "
        f"({sync['first']['pending']} folders, one task per "
        f"{-(-sync['first']['pending'] // max(1, sync['first_tasks']))}) "
        f"{phases['enqueue']:.1f} s, the rest {phases['rest']:.1f} s. "
        f"{sync['s3_requests']} S3 requests; CPU: the sync's process "
        f"{sync['cpu_seconds']:.1f} s, moto's server {sync['aws_cpu_seconds']:.1f} s. "
        f"The worker's part, run in the benchmark's process two batches at a time (as the "
        f"worker's two processes would): {sync['describe_requests']} S3 requests (a manifest "
        f"GET each, 16 threads per batch), queueing the {sync['validations_queued']} "
        f"validations through one producer per batch {sync['describe_enqueue_seconds']:.1f} s "
        f"(summed over batches), moto's CPU {sync['describe_aws_cpu_seconds']:.1f} s. "
        f"The re-sync: CPU of the sync's process {sync['second_cpu_seconds']:.1f} s, moto's "
        f"{sync['second_aws_cpu_seconds']:.1f} s (the listing is nearly all of it; on a busy "
        "machine the wall time is mostly waiting for a CPU)."
    )
    creation = data["mlflow_db"]
    seed = data["seed"]
    per_version = creation["api_seconds"] / max(1, creation["api_versions"]) * 1000
    lines = [
        f"`python bench/bench_registry.py` on {data['date']}: {data['machine']}. "
        f"A model with {count} versions on each side, both servers on this machine "
        "with SQLite: ours is the dashboard under gunicorn (1 worker, 4 threads, DEBUG off), "
        f"rows inserted with bulk_create; MLflow {data['mlflow']} is `mlflow server "
        "--workers 1` (its job runner off), its first versions made by MLflow's own client "
        "and the rest copies of those rows in its own tables (see below). "
        f"API: {data['requests']} requests per call after 10 of warm-up, the four calls "
        "interleaved round by round, one keep-alive client each; ours authenticates with "
        "an API token, MLflow has no authentication. Browser: Debian's chromium (headless, "
        "Playwright, 1280x900), from navigation start to the frame that paints the newest "
        "version's row (a MutationObserver notes the row, the next animation frame the time), "
        "and from the click on the next-page control to the frame with the next page's first "
        f"row; warm cache, median of {BROWSER_REPEATS}; each UI shows its default page size "
        "(ours 50 rows, MLflow's 25). The ratio is ours / MLflow's.",
        "",
        table(["measurement", "ours", "MLflow", "ratio", "target", "met?"], rows),
        "",
        "Setup, not measured against anything: "
        f"our {count} rows bulk-inserted in {seed['seconds']:.1f} s; "
        f"MLflow's client created versions at {per_version:.1f} ms each "
        f"({creation['api_versions']} of them; all {count} that way would take about "
        f"{per_version * count / 1000:.0f} s, more as the table grows), the rest copied "
        f"in {creation['bulk_seconds']:.1f} s"
        + (" (database cached from an earlier run)" if creation.get("cached") else "")
        + f"; {count} folders put into the embedded S3 with 8 threads in "
        f"{data['fill_seconds']:.1f} s.",
        "",
        breakdown,
    ]
    if isinstance(browser, str):
        lines += ["", f"Browser timing was not measured: {browser}"]
    if "scale" in data:
        lines += ["", scale_report(data)]
    return "\n".join(lines)


def scale_report(data: dict[str, Any]) -> str:
    scale = data["scale"]
    lines = [
        f"#### {BIG_COUNT // 1000}k versions of one model",
        "",
        f"The same run, after the comparison above: two more models in the same database, "
        f"`{BIG}` with {BIG_COUNT} versions and `{SMALL}` with {SMALL_COUNT} (the baseline: the "
        f"ratio is {BIG_COUNT // 1000}k / 1k), 1% of each invalid, two environments each "
        "serving one version. API: the first page of 100 (and the next one, by cursor), "
        f"{SCALE_REQUESTS} requests per query and model after 3 of warm-up, interleaved; "
        "every answer's first version checked. Page: from navigation start to the frame "
        f"that paints the first version row, warm cache, median of {BROWSER_REPEATS}.",
        "",
    ]
    for key, name in (("api_sqlite", "SQLite"), ("api_postgres", "PostgreSQL")):
        samples = scale.get(key)
        if not isinstance(samples, dict):
            lines += [f"API on {name}: not measured ({samples}).", ""]
            continue
        version = scale.get("postgres_version", "")
        rows = []
        for label, per_model in samples.items():
            big = statistics.median(per_model[BIG])
            small = statistics.median(per_model[SMALL])
            rows.append(
                [
                    label,
                    ms(big),
                    ms(percentile(per_model[BIG], 0.95)),
                    ms(small),
                    f"{big / small:.2f}x",
                    "≤ 50 ms",
                    verdict(big <= 0.05),
                ]
            )
        lines += [
            f"API on {name}{f' {version}' if key == 'api_postgres' and version else ''}, "
            "first page of 100:",
            "",
            table(
                [
                    "query",
                    f"{BIG_COUNT // 1000}k, median",
                    f"{BIG_COUNT // 1000}k, p95",
                    f"{SMALL_COUNT // 1000}k, median",
                    "ratio",
                    "target",
                    "met?",
                ],
                rows,
            ),
            "",
        ]
    browser = scale.get("browser")
    if isinstance(browser, dict):
        rows = []
        for label, per_model in browser.items():
            big_runs = per_model.get(BIG)
            if not big_runs:
                continue
            big = statistics.median(big_runs["warm"])
            small_runs = per_model.get(SMALL)
            small = statistics.median(small_runs["warm"]) if small_runs else None
            rows.append(
                [
                    label,
                    f"{big:.0f} ms",
                    f"{big_runs['cold']:.0f} ms",
                    f"{small:.0f} ms" if small else "-",
                    f"{big / small:.2f}x" if small else "-",
                    "≤ 300 ms",
                    verdict(big <= 300),
                ]
            )
        lines += [
            "Browser (Debian's chromium), first version row painted:",
            "",
            table(
                [
                    "page",
                    f"{BIG_COUNT // 1000}k, median",
                    f"{BIG_COUNT // 1000}k, first visit",
                    f"{SMALL_COUNT // 1000}k, median",
                    "ratio",
                    "target",
                    "met?",
                ],
                rows,
            ),
        ]
    elif browser:
        lines += [f"Browser at scale: not measured ({browser})."]
    seeds = [scale.get(f"seed_{m}") for m in (SMALL, BIG)]
    if all(isinstance(x, dict) for x in seeds):
        lines += [
            "",
            f"Setup: {BIG_COUNT} rows bulk-inserted into SQLite in "
            f"{seeds[1]['seconds']:.1f} s (the triggers that keep the counts and the search "
            "index run for every row).",
        ]
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs shared by the servers and the clients "
        f"(load average {os.getloadavg()[0]:.1f} at the start)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-scale", action="store_true", help="skip the 100k-version run")
    args = parser.parse_args()
    started = time.perf_counter()
    python, mlflow_version = ensure_mlflow()
    cached_db, creation = mlflow_database(python, mlflow_version, args.count)
    data: dict[str, Any] = {
        "count": args.count,
        "requests": args.requests,
        "mlflow": mlflow_version,
        "mlflow_db": creation,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
    }
    password = secrets.token_urlsafe(12)
    with Stack(prefix="modeldeck-bench-registry-") as stack:
        dashboard_port = free_port()
        stack.env["MODELDECK_DASHBOARD_PORT"] = str(dashboard_port)
        stack.start_redis()
        stack.start_aws(cors_origin=f"http://127.0.0.1:{dashboard_port}")
        stack.migrate()
        token = stack.django("users", "--password", password)["token"]
        data["seed"] = stack.django("seed", "--model", MODEL, "--count", str(args.count))
        stack.start_dashboard(workers=1, threads=4)
        _, mlflow_url = start_mlflow(stack, python, cached_db)
        print("measuring the API", flush=True)
        data["api"] = api_latency(stack.dashboard_url, token, mlflow_url, args.count, args.requests)
        if args.no_browser:
            data["browser"] = "skipped (--no-browser)"
        elif not ensure_debian_package("chromium", "chromium"):
            data["browser"] = "Debian's chromium is missing and could not be installed"
        else:
            print("measuring in the browser", flush=True)
            try:
                data["browser"] = browser_timings(
                    stack.dashboard_url, password, mlflow_url, args.count
                )
            except Exception as exc:  # report why instead of losing the API numbers
                data["browser"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if not args.no_scale:
            data["scale"] = scale_run(
                stack,
                password,
                token,
                SCALE_REQUESTS,
                browser=isinstance(data["browser"], dict),
            )
        print("measuring the sync", flush=True)
        data["fill_seconds"] = fill_s3(stack, args.count)
        sync_db = {"DATABASE_URL": f"sqlite:///{stack.root / 'sync.sqlite3'}"}
        stack.migrate(env=sync_db)
        data["sync"] = stack.django("sync", "--aws-pid", str(stack.service("aws").pid), env=sync_db)
    text = report(data)
    print(text)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        write_subsection(TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
