"""Benchmark of the metrics and logs pages; writes the "## Monitoring" section
of docs/benchmarks.md.

    .venv/bin/python bench/bench_monitoring.py [--log-events 1000000] [--pages 20]
                                               [--watch-seconds 62] [--no-write]

On this machine, 127.0.0.1 only: a private Redis (Django's cache), the
embedded AWS (moto's server with devstack/aws_fidelity.py, as `make run`
starts it), and the dashboard under gunicorn (2 workers, as `make run`), its
CloudWatch and CloudWatch Logs calls going through a counting proxy so every
call is seen at the network edge.

1. Metrics page, 7 days at the default period (1 h): a week of one-minute
   App Runner metrics of one service (what App Runner publishes), the stand-in's
   pre-computed percentiles, five-minute inference metrics of two versions and
   six deployments are put into the embedded CloudWatch first. Debian's
   chromium measures from navigation start to the frame that paints the first
   chart: with the shared answer in Redis (warm) and with Redis emptied first
   (cold: the page's one GetMetricData runs). Baselines in the same run: the
   same GetMetricData request straight from boto3, and the page's own shell
   (DOMContentLoaded).
2. CloudWatch calls per page view and per refresh (1 h range, 15 s refresh),
   counted at the proxy; then ``--pages`` pages open in one browser for
   ``--watch-seconds`` against one page for as long.
3. Logs page: ``--log-events`` request lines in one application log group
   (two instance streams, the last hour), first screen of 200 lines: from
   navigation start to the frame that paints the first line, against the
   same FilterLogEvents request straight from boto3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import http.server
import json
import math
import os
import platform
import secrets
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._registry_stack import PYTHON, REGION, Stack, ensure_debian_package  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Monitoring"
SERVICE = "iris-staging"
SERVICE_ID = "c1ade4dcdb485da78bca47b5246f7147"
ARN = f"arn:aws:apprunner:{REGION}:000000000000:service/{SERVICE}/{SERVICE_ID}"
DIMS = [{"Name": "ServiceName", "Value": SERVICE}, {"Name": "ServiceID", "Value": SERVICE_ID}]
APP_GROUP = f"/aws/apprunner/{SERVICE}/{SERVICE_ID}/application"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPEATS = 7
# How many times a page has fetched its chart data so far.
DATA_LOADS = (
    "performance.getEntriesByType('resource').filter(e => e.name.includes('/metrics/data')).length"
)


# --- A counting proxy in front of the embedded AWS ------------------------------------


class CountingProxy:
    """Forwards HTTP to ``target`` and counts requests by AWS operation."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://")
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1] if target else self.path.rsplit("/", 1)[-1]
                with proxy.lock:
                    proxy.counts[operation] += 1
                upstream = http.client.HTTPConnection(proxy.target, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request("POST", self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def close(self) -> None:
        self.server.shutdown()


# --- Seeding ------------------------------------------------------------------------------


def client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(read_timeout=300, retries={"mode": "standard", "max_attempts": 3}),
    )


def seed_metrics(endpoint: str, now: dt.datetime) -> dict[str, Any]:
    """A week of App Runner metrics per minute, percentiles, inference per 5 minutes."""
    import random

    cw = client("cloudwatch", endpoint)
    rng = random.Random(3)
    started = time.perf_counter()
    batches: dict[str, list[dict[str, Any]]] = {
        "AWS/AppRunner": [],
        "DevStack/Percentiles": [],
        "ModelDeck/Inference": [],
    }
    count = 0

    def add(namespace: str, item: dict[str, Any]) -> None:
        nonlocal count
        batches[namespace].append(item)
        count += 1
        if len(batches[namespace]) == 1000:
            cw.put_metric_data(Namespace=namespace, MetricData=batches[namespace])
            batches[namespace] = []

    minutes = 7 * 24 * 60
    for m in range(minutes):
        at = now - dt.timedelta(minutes=minutes - m)
        requests = 50 + 30 * (1 + math.sin(m / 180)) + rng.randint(0, 20)
        errors = rng.randint(0, 2)
        clients = rng.randint(0, 3)
        for name, value in (
            ("Requests", requests),
            ("2xxStatusResponses", requests - errors - clients),
            ("4xxStatusResponses", clients),
            ("5xxStatusResponses", errors),
            ("ActiveInstances", 1),
            ("Concurrency", rng.randint(1, 4)),
            ("CPUUtilization", rng.uniform(2, 30)),
            ("MemoryUtilization", rng.uniform(14, 16)),
        ):
            add(
                "AWS/AppRunner",
                {"MetricName": name, "Dimensions": DIMS, "Timestamp": at, "Value": float(value)},
            )
        p50 = rng.uniform(3, 6)
        add(
            "AWS/AppRunner",
            {
                "MetricName": "RequestLatency",
                "Dimensions": DIMS,
                "Timestamp": at,
                "Unit": "Milliseconds",
                "StatisticValues": {
                    "SampleCount": requests,
                    "Sum": requests * p50 * 1.3,
                    "Minimum": 0.5,
                    "Maximum": p50 * 12,
                },
            },
        )
        for stat, factor in (("p50", 1.0), ("p90", 2.5), ("p99", 6.0)):
            add(
                "DevStack/Percentiles",
                {
                    "MetricName": "RequestLatency",
                    "Dimensions": [
                        *DIMS,
                        {"Name": "SourceNamespace", "Value": "AWS/AppRunner"},
                        {"Name": "Statistic", "Value": stat},
                    ],
                    "Timestamp": at,
                    "Unit": "Milliseconds",
                    "Value": p50 * factor,
                },
            )
        if m % 5 == 0:
            version = "2026.11.2" if m < minutes // 2 else "2026.11.3"
            dims = [
                {"Name": "Environment", "Value": "staging"},
                {"Name": "Model", "Value": "iris"},
                {"Name": "Version", "Value": version},
            ]
            for name, value in (
                ("Predictions", requests * 5 * 2.5),
                ("PredictionLatency", p50 * 0.8),
                ("BatchSize", 2.5),
                ("Errors", 0),
            ):
                add(
                    "ModelDeck/Inference",
                    {
                        "MetricName": name,
                        "Dimensions": dims,
                        "Timestamp": at,
                        "Value": float(value),
                    },
                )
    for namespace, rest in batches.items():
        if rest:
            cw.put_metric_data(Namespace=namespace, MetricData=rest)
    return {"datums": count, "seconds": time.perf_counter() - started}


def seed_logs(endpoint: str, events: int) -> dict[str, Any]:
    """``events`` request lines over the last 50 minutes, in two instance streams."""
    logs = client("logs", endpoint)
    logs.create_log_group(logGroupName=APP_GROUP)
    streams = ["instance/aaaa1111", "instance/bbbb2222"]
    for stream in streams:
        logs.create_log_stream(logGroupName=APP_GROUP, logStreamName=stream)
    now_ms = int(time.time() * 1000)
    span_ms = 50 * 60 * 1000
    per_stream = events // len(streams)
    started = time.perf_counter()
    for index, stream in enumerate(streams):
        first = now_ms - span_ms
        step = span_ms / per_stream
        for start in range(0, per_stream, 10_000):
            batch = []
            for i in range(start, min(per_stream, start + 10_000)):
                status = 500 if i % 997 == 0 else 422 if i % 53 == 0 else 200
                line = {
                    "ts": "",
                    "level": "ERROR" if status == 500 else "INFO",
                    "logger": "inference.access",
                    "msg": f"POST /predict {status}",
                    "event": "request",
                    "method": "POST",
                    "path": "/predict",
                    "status": status,
                    "duration_ms": round(1 + (i % 17) * 0.37, 3),
                    "request_id": f"{index:02x}{i:030x}",
                }
                batch.append({"timestamp": int(first + i * step), "message": json.dumps(line)})
            logs.put_log_events(logGroupName=APP_GROUP, logStreamName=stream, logEvents=batch)
    return {"events": per_stream * len(streams), "seconds": time.perf_counter() - started}


# --- Measuring ------------------------------------------------------------------------------

FIRST_SCRIPT = """
(() => {
  const selector = %s;
  const check = () => {
    const el = document.querySelector(selector);
    if (el && el.getClientRects().length) {
      observer.disconnect();
      requestAnimationFrame(() => { window.__firstAt = performance.now(); });
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, {childList: true, subtree: true, attributes: true,
                              attributeFilter: ["data-painted"]});
  document.addEventListener("DOMContentLoaded", () => {
    window.__shellAt = performance.now();
    check();
  });
})();
"""


def django_step(stack: Stack, *args: str) -> Any:
    result = subprocess.run(
        [PYTHON, str(REPO / "bench" / "_monitoring_django.py"), *args],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"_monitoring_django.py {args[0]} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def direct_get_metric_data(endpoint: str, now: dt.datetime) -> float:
    """The page's 7-day request, straight from boto3 (the same 16 queries)."""
    cw = client("cloudwatch", endpoint)
    names = [
        ("AWS/AppRunner", n, "Sum", DIMS)
        for n in ("Requests", "2xxStatusResponses", "4xxStatusResponses", "5xxStatusResponses")
    ] + [
        ("AWS/AppRunner", "ActiveInstances", "Maximum", DIMS),
        ("AWS/AppRunner", "Concurrency", "Maximum", DIMS),
        ("AWS/AppRunner", "CPUUtilization", "Average", DIMS),
        ("AWS/AppRunner", "MemoryUtilization", "Average", DIMS),
    ]
    queries = [
        {
            "Id": f"q{i}",
            "MetricStat": {
                "Metric": {"Namespace": ns, "MetricName": name, "Dimensions": dims},
                "Period": 3600,
                "Stat": stat,
            },
        }
        for i, (ns, name, stat, dims) in enumerate(names)
    ]
    for j, stat in enumerate(("p50", "p90", "p99")):
        queries.append(
            {
                "Id": f"p{j}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "DevStack/Percentiles",
                        "MetricName": "RequestLatency",
                        "Dimensions": [
                            *DIMS,
                            {"Name": "SourceNamespace", "Value": "AWS/AppRunner"},
                            {"Name": "Statistic", "Value": stat},
                        ],
                    },
                    "Period": 3600,
                    "Stat": "Average",
                },
            }
        )
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        cw.get_metric_data(
            MetricDataQueries=queries,
            StartTime=end - dt.timedelta(days=7),
            EndTime=end,
            ScanBy="TimestampAscending",
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def direct_filter_log_events(endpoint: str) -> float:
    logs = client("logs", endpoint)
    samples = []
    now_ms = int(time.time() * 1000)
    for _ in range(REPEATS):
        started = time.perf_counter()
        logs.filter_log_events(
            logGroupName=APP_GROUP,
            logStreamNamePrefix="instance/",
            startTime=now_ms - 3600_000,
            endTime=now_ms + 60_000,
            limit=200,
            startFromHead=False,
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def server_times(page: Any, url: str) -> float:
    """Median milliseconds for the whole answer to ``url`` (no rendering)."""
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = page.request.get(url)
        response.body()
        assert response.ok, response.status
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def sign_in(page: Any, dashboard: str, password: str) -> None:
    page.goto(f"{dashboard}/login/")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/")


def first_paint(page: Any, url: str) -> tuple[float, float]:
    """(first chart or line painted, DOMContentLoaded), ms from navigation start."""
    page.goto("about:blank")
    page.goto(url, wait_until="commit")
    page.wait_for_function("window.__firstAt !== undefined", timeout=120_000)
    return float(page.evaluate("window.__firstAt")), float(page.evaluate("window.__shellAt || 0"))


def browser_measurements(
    stack: Stack, proxy: CountingProxy, password: str, *, pages: int, watch: float
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    dashboard = stack.dashboard_url
    metrics_7d = f"{dashboard}/models/iris/environments/staging/metrics/?range=7d"
    metrics_1h = f"{dashboard}/models/iris/environments/staging/metrics/?range=1h"
    logs_url = f"{dashboard}/models/iris/environments/staging/logs/"
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(FIRST_SCRIPT % json.dumps("section.chart[data-painted]"))
            page = context.new_page()
            sign_in(page, dashboard, password)
            cold, warm, shells = [], [], []
            calls_per_cold = []
            for _ in range(REPEATS):
                django_step(stack, "cache-clear")
                before = proxy.snapshot()["GetMetricData"]
                paint, _shell = first_paint(page, metrics_7d)
                cold.append(paint)
                calls_per_cold.append(proxy.snapshot()["GetMetricData"] - before)
                paint, shell = first_paint(page, metrics_7d)
                warm.append(paint)
                shells.append(shell)
            results["metrics_7d"] = {
                "cold": cold,
                "warm": warm,
                "shell": shells,
                "calls": calls_per_cold,
            }

            # Calls per page view and per refresh (1 h range: 15 s refresh).
            django_step(stack, "cache-clear")
            page.goto("about:blank")
            time.sleep(16)  # a fresh refresh slot
            before = proxy.snapshot()
            page.goto(metrics_1h)
            page.wait_for_selector("section.chart[data-painted]")
            after_view = proxy.snapshot()
            page.wait_for_function(
                "document.getElementById('metrics-status').textContent.startsWith('Updated') && "
                f"{DATA_LOADS} >= 2",
                timeout=40_000,
            )
            after_refresh = proxy.snapshot()
            results["per_view"] = dict(after_view - before)
            results["per_refresh"] = dict(after_refresh - after_view)
            page.goto("about:blank")
            context.close()

            # One page for WATCH seconds, then PAGES pages for as long.
            for count in (1, pages):
                django_step(stack, "cache-clear")
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                opened = [context.new_page() for _ in range(count)]
                sign_in(opened[0], dashboard, password)
                before = proxy.snapshot()["GetMetricData"]
                started = time.monotonic()
                for p in opened:
                    p.goto(metrics_1h, wait_until="commit")
                for p in opened:
                    p.wait_for_selector("section.chart[data-painted]", timeout=120_000)
                visible = sum(p.evaluate("document.visibilityState") == "visible" for p in opened)
                time.sleep(max(0.0, watch - (time.monotonic() - started)))
                loads = sum(p.evaluate(DATA_LOADS) for p in opened)
                results[f"watch_{count}"] = {
                    "calls": proxy.snapshot()["GetMetricData"] - before,
                    "data_requests": loads,
                    "visible": visible,
                    "seconds": time.monotonic() - started,
                }
                context.close()

            # Logs: first line of the first screen.
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(FIRST_SCRIPT % json.dumps("#log-rows tr.log-line"))
            page = context.new_page()
            sign_in(page, dashboard, password)
            first_lines, log_calls = [], []
            for _ in range(1 + REPEATS):
                before = proxy.snapshot()
                paint, _shell = first_paint(page, logs_url)
                first_lines.append(paint)
                page.wait_for_load_state("networkidle")
                log_calls.append(dict(proxy.snapshot() - before))
            rows = page.locator("#log-rows tr.log-line").count()
            # The server's share: the whole HTML of the logs page, and the metrics
            # page's data (warm), fetched with the browser's session.
            results["server"] = {
                "logs_html": server_times(page, logs_url),
                "metrics_data_warm": server_times(
                    page, f"{dashboard}/models/iris/environments/staging/metrics/data?range=7d"
                ),
            }
            context.close()
            results["logs"] = {
                "cold": first_lines[0],
                "first": first_lines[1:],
                "rows": rows,
                "calls": log_calls[-1],
            }
        finally:
            browser.close()
    return results


# --- Report -----------------------------------------------------------------------------------


def write_section(body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    block = [SECTION, "", *body.strip("\n").split("\n"), ""]
    try:
        start = lines.index(SECTION)
    except ValueError:
        lines += ["", *block]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = block
    tmp = DOC.with_suffix(".md.tmp-monitoring")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, DOC)


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def report(data: dict[str, Any]) -> str:
    b = data["browser"]
    m = b["metrics_7d"]
    cold, warm, shell = (statistics.median(m[k]) for k in ("cold", "warm", "shell"))
    direct = data["direct_get_metric_data"] * 1000
    logs = b["logs"]
    first_line = statistics.median(logs["first"])
    direct_logs = data["direct_filter_log_events"] * 1000
    one, many = b["watch_1"], b[f"watch_{data['pages']}"]
    rows = [
        [
            "metrics page, 7 d at 1 h periods: first chart painted, cold "
            "(Redis emptied: the page's GetMetricData runs)",
            f"{cold:.0f} ms",
            f"{cold / direct:.1f}x the bare GetMetricData ({direct:.0f} ms)",
            "< 1000 ms",
            "yes" if cold < 1000 else "**no**",
        ],
        [
            "same, warm (the shared answer from Redis)",
            f"{warm:.0f} ms",
            f"{warm / shell:.1f}x the page shell ({shell:.0f} ms to DOMContentLoaded)",
            "< 1000 ms",
            "yes" if warm < 1000 else "**no**",
        ],
        [
            "CloudWatch calls per page view (cold), per refresh",
            f"{json.dumps(b['per_view'])}; {json.dumps(b['per_refresh'])}",
            "-",
            "1 GetMetricData each",
            "yes"
            if b["per_view"] == {"GetMetricData": 1} and b["per_refresh"] == {"GetMetricData": 1}
            else "**no**",
        ],
        [
            f"GetMetricData calls while pages refresh for {data['watch']:.0f} s: "
            f"1 page vs {data['pages']} pages",
            f"{one['calls']} vs {many['calls']}",
            f"{many['data_requests']} vs {one['data_requests']} page requests for data",
            f"{data['pages']} pages ≤ 1 page",
            "yes" if many["calls"] <= one["calls"] else "**no**",
        ],
        [
            f"logs page, first screen of {logs['rows']} lines of a group of "
            f"{data['logs']['events']:,} events: first line painted",
            f"{first_line:.0f} ms (first visit {logs['cold']:.0f} ms)",
            f"{first_line / direct_logs:.1f}x the bare FilterLogEvents ({direct_logs:.0f} ms)",
            "measured",
            "-",
        ],
    ]
    server = b["server"]
    rows.insert(
        2,
        [
            "the metrics data answer alone (7 d, warm), server side",
            f"{server['metrics_data_warm']:.0f} ms",
            "-",
            "-",
            "-",
        ],
    )
    rows.append(
        [
            "the logs page's HTML alone (200 lines read, parsed and rendered), server side",
            f"{server['logs_html']:.0f} ms",
            f"{server['logs_html'] / direct_logs:.1f}x the bare FilterLogEvents",
            "-",
            "-",
        ]
    )
    seed = data["metrics_seed"]
    return "\n".join(
        [
            "### Metrics and logs pages (bench_monitoring.py)",
            "",
            f"`python bench/bench_monitoring.py` on {data['date']}: {data['machine']}. The local "
            "stack's parts on free ports: the dashboard under gunicorn (2 workers, 4 threads, "
            "DEBUG off, Redis cache), the embedded AWS (moto with devstack/aws_fidelity.py), and a "
            "counting "
            "proxy in front of it for CloudWatch and CloudWatch Logs. Debian's chromium (headless, "
            "1280x900) measures from navigation start to the frame that paints the first chart "
            "(uPlot's first draw) or the first log line; median of "
            f"{REPEATS}. The embedded CloudWatch holds {seed['datums']:,} data points "
            "(a week of one-minute App Runner metrics, pre-computed percentiles, five-minute "
            "inference metrics of two versions); the page asks for 16 series of 169 points in "
            'one GetMetricData. The "vs" column compares with a baseline measured in the same run.',
            "",
            table(["measurement", "result", "vs", "target", "met?"], rows),
            "",
            f"{data['pages']} pages: every page stayed visible to the Page Visibility API "
            f"({many['visible']} of {data['pages']}) and refreshed when each 15-second refresh "
            f"slot ended, with up to 2.5 s of jitter ({many['data_requests']} data requests in "
            "all); the answers are shared through Redis per slot, and a lock in Redis makes "
            "concurrent misses wait for the one GetMetricData in flight. A hidden page does not "
            "refresh at all. Logs page calls "
            f"per view: {json.dumps(logs['calls'])} (the first screen's FilterLogEvents, newest "
            "first; the stream picker's two DescribeLogStreams come in a second request after "
            "the lines are painted). Setup (not measured): "
            f"metrics put in {seed['seconds']:.0f} s, {data['logs']['events']:,} log events in "
            f"{data['logs']['seconds']:.0f} s.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log-events", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--watch-seconds", type=float, default=62.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not ensure_debian_package("chromium", "chromium"):
        print("chromium is missing and could not be installed", file=sys.stderr)
        return 1
    data: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared by the servers and the "
        f"browser (load average {os.getloadavg()[0]:.1f} at the start)",
        "pages": args.pages,
        "watch": args.watch_seconds,
    }
    password = secrets.token_urlsafe(12)
    stack = Stack(prefix="modeldeck-bench-monitoring-")
    proxy: CountingProxy | None = None
    try:
        stack.start_redis()
        stack.start_aws(cors_origin="http://127.0.0.1")
        proxy = CountingProxy(stack.aws_url)
        stack.env["AWS_ENDPOINT_URL_CLOUDWATCH"] = proxy.url
        stack.env["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] = proxy.url
        stack.env["CLOUDWATCH_PERCENTILES_NAMESPACE"] = "DevStack/Percentiles"
        stack.env["CACHE_URL"] = stack.env["REDIS_URL"]
        stack.migrate()
        now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        print("seeding a week of metrics…", flush=True)
        data["metrics_seed"] = seed_metrics(stack.aws_url, now)
        print(f"  {data['metrics_seed']}", flush=True)
        print(f"seeding {args.log_events:,} log events…", flush=True)
        data["logs"] = seed_logs(stack.aws_url, args.log_events)
        print(f"  {data['logs']}", flush=True)
        deployments = [
            f"{(now - dt.timedelta(days=d, hours=h)).isoformat().replace('+00:00', 'Z')}={v}"
            for d, h, v in (
                (6, 3, "2026.11.1"),
                (5, 1, "2026.11.2"),
                (3, 12, "2026.11.3"),
                (2, 0, "2026.11.2"),
                (1, 5, "2026.11.3"),
                (0, 2, "2026.11.3"),
            )
        ]
        django_step(
            stack,
            "setup",
            "--password",
            password,
            "--service-arn",
            ARN,
            *[f"--deployment={d}" for d in deployments],
        )
        stack.start_dashboard(workers=2, threads=4)
        data["direct_get_metric_data"] = direct_get_metric_data(stack.aws_url, now)
        data["direct_filter_log_events"] = direct_filter_log_events(stack.aws_url)
        data["browser"] = browser_measurements(
            stack, proxy, password, pages=args.pages, watch=args.watch_seconds
        )
    finally:
        if proxy is not None:
            proxy.close()
        stack.stop()
    print(json.dumps(data, indent=1, default=str))
    body = report(data)
    print(body)
    if not args.no_write:
        write_section(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
