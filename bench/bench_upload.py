"""Benchmark of the browser upload against boto3's upload_file; writes the
"Browser upload" part of the "Registry" section of docs/benchmarks.md.

    .venv/bin/python bench/bench_upload.py [--mib 1024] [--rounds 3] [--no-write]
                                           [--chromium-mib 256] [--chromium-rounds 5]

``BENCH_QUICK=1`` shrinks the file to 256 MiB. Everything runs on this
machine, on 127.0.0.1 only:

- the dashboard under gunicorn (one worker process with four threads, so one
  process serves every request), its SQLite database, a private Redis, and
  the embedded AWS (moto's server, ``python -m devstack.embedded_aws``) with
  the models bucket set up as the contract says;
- "browser flow": the HTTP calls static/js/upload.js makes, made with httpx:
  ``POST /api/models/<m>/uploads``, then each part PUT to its presigned URL,
  six at a time, the file read in order one part ahead and hashed (SHA-256)
  on the way, then ``POST .../uploads/<id>/complete`` with the digest;
- baseline, in the same run against the same moto server: boto3's
  ``upload_file`` of the same file with the default TransferConfig;
- control: the browser flow's S3 calls made directly, without the dashboard,
  which shows how much of any difference is the dashboard's.

- in Chromium (Debian's, through Playwright), a ``--chromium-mib`` file picked
  in the upload page: the page's own flow (static/js/upload.js) against plain
  parallel ``fetch`` PUTs of the same parts from the same page, between the
  same start and complete API calls, ``--chromium-rounds`` rounds alternating
  who goes first (the ratio the browser upload is judged by).

The first three take turns for ``--rounds`` rounds, each round in another order, and
every uploaded object is deleted (all versions) before the next upload, so
each meets moto holding the same data. Each is timed from its first request to
the last answer. Memory: the gunicorn worker's resident set before the first
measured upload (after a small warm-up upload, so lazy imports do not count)
against its peak (VmHWM, reset to the current RSS through
/proc/<pid>/clear_refs) after the last.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import secrets
import statistics
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._registry_doc import table, write_subsection  # noqa: E402
from bench._registry_stack import (  # noqa: E402
    BUCKET,
    Stack,
    ensure_debian_package,
    free_port,
    read_proc_status,
    reset_peak_rss,
)

MODEL = "bench"
PARALLEL = 6  # upload.js's PARALLEL
MIB = 1024 * 1024
TITLE = "Browser upload (bench_upload.py)"


def make_file(path: Path, size: int) -> None:
    """Random bytes (nothing on the way can compress them)."""
    chunk = 64 * MIB
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(chunk, left)
            fh.write(os.urandom(n))
            left -= n


def browser_flow(dashboard: str, token: str, path: Path, version: str) -> dict[str, Any]:
    """Upload ``path`` as upload.js does; return seconds and what the API said."""
    import httpx

    size = path.stat().st_size
    headers = {"Authorization": f"Token {token}"}
    api = f"{dashboard}/api/models/{MODEL}/uploads"
    limits = httpx.Limits(max_connections=PARALLEL + 2, max_keepalive_connections=PARALLEL + 2)
    started = time.perf_counter()
    with httpx.Client(timeout=600, limits=limits) as http:
        response = http.post(
            api,
            headers=headers,
            json={
                "version": version,
                "filename": "model.pt",
                "size": size,
                "sha256": None,
                "format": "torchscript",
                "input": {"shape": [4], "dtype": "float32"},
                "notes": "benchmark upload",
                "metrics": {},
            },
        )
        response.raise_for_status()
        plan = response.json()
        planned = time.perf_counter()
        part_size = int(plan["part_size"])
        urls = {int(p["part_number"]): p["url"] for p in plan["parts"]}

        def put(number: int, data: bytes) -> tuple[int, str]:
            answer = http.put(urls[number], content=data)
            answer.raise_for_status()
            return number, answer.headers["ETag"]

        digest = hashlib.sha256()
        etags: dict[int, str] = {}
        running: deque[Future[tuple[int, str]]] = deque()
        with ThreadPoolExecutor(PARALLEL) as pool, path.open("rb") as fh:
            for number in range(1, int(plan["part_count"]) + 1):
                # Read ahead only when an upload slot is free, as upload.js does:
                # at most PARALLEL + 1 parts in memory.
                while len(running) >= PARALLEL:
                    done, etag = running.popleft().result()
                    etags[done] = etag
                data = fh.read(part_size)
                digest.update(data)
                running.append(pool.submit(put, number, data))
                del data
            while running:
                done, etag = running.popleft().result()
                etags[done] = etag
        sent = time.perf_counter()
        response = http.post(
            f"{api}/{plan['upload_id']}/complete",
            headers=headers,
            json={
                "parts": [{"part_number": n, "etag": etags[n]} for n in sorted(etags)],
                "sha256": digest.hexdigest(),
            },
        )
        response.raise_for_status()
    seconds = time.perf_counter() - started
    version_out = response.json()
    if version_out["size"] != size or version_out["status"] != "validating":
        raise RuntimeError(f"unexpected completion: {version_out}")
    return {
        "seconds": seconds,
        "start_seconds": planned - started,
        "parts_seconds": sent - planned,
        "complete_seconds": seconds - (sent - started),
        "parts": int(plan["part_count"]),
        "part_size": part_size,
    }


def boto3_upload(stack: Stack, path: Path, key: str) -> dict[str, float]:
    """boto3's upload_file with its default TransferConfig; return seconds in
    all and in its CompleteMultipartUpload call."""
    s3 = stack.s3()
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        def handler(**_: Any) -> None:
            marks[name] = time.perf_counter()

        return handler

    s3.meta.events.register("before-call.s3.CompleteMultipartUpload", mark("complete"))
    started = time.perf_counter()
    s3.upload_file(str(path), BUCKET, key)
    seconds = time.perf_counter() - started
    head = s3.head_object(Bucket=BUCKET, Key=key)
    if int(head["ContentLength"]) != path.stat().st_size:
        raise RuntimeError("boto3's upload stored the wrong size")
    return {"seconds": seconds, "complete_seconds": started + seconds - marks["complete"]}


def bare_flow(stack: Stack, path: Path, key: str, part_size: int) -> dict[str, float]:
    """The browser flow's S3 calls without the dashboard: boto3 starts and
    completes the upload and presigns the parts, httpx PUTs them PARALLEL at
    a time. Shows what the dashboard itself adds."""
    import httpx

    s3 = stack.s3()
    size = path.stat().st_size
    started = time.perf_counter()
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    count = -(-size // part_size)
    urls = [
        s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": n},
            ExpiresIn=3600,
            HttpMethod="PUT",
        )
        for n in range(1, count + 1)
    ]
    limits = httpx.Limits(max_connections=PARALLEL + 2)
    with httpx.Client(timeout=600, limits=limits) as http, path.open("rb") as fh:

        def put(number: int, data: bytes) -> tuple[int, str]:
            answer = http.put(urls[number - 1], content=data)
            answer.raise_for_status()
            return number, answer.headers["ETag"]

        etags: dict[int, str] = {}
        running: deque[Future[tuple[int, str]]] = deque()
        with ThreadPoolExecutor(PARALLEL) as pool:
            for number in range(1, count + 1):
                while len(running) >= PARALLEL:
                    done, etag = running.popleft().result()
                    etags[done] = etag
                running.append(pool.submit(put, number, fh.read(part_size)))
            while running:
                done, etag = running.popleft().result()
                etags[done] = etag
    sent = time.perf_counter()
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
    )
    ended = time.perf_counter()
    return {"seconds": ended - started, "complete_seconds": ended - sent}


# --- In Chromium --------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Clicks Upload and resolves when the page says the version is uploaded:
# {ms, puts_ms} (puts_ms: first part PUT's start to the last one's end, from
# the browser's resource timing), or rejects with the page's error.
OURS_SCRIPT = """
async (aws) => {
  const done = document.getElementById("upload-done");
  const error = document.getElementById("upload-error");
  performance.clearResourceTimings();
  const t0 = performance.now();
  const finished = new Promise((resolve, reject) => {
    const observer = new MutationObserver(() => {
      if (!error.hidden) { observer.disconnect(); reject(new Error(error.textContent)); }
      else if (!done.hidden) { observer.disconnect(); resolve(performance.now() - t0); }
    });
    observer.observe(document.body,
                     {subtree: true, attributes: true, attributeFilter: ["hidden"]});
  });
  document.getElementById("upload-start").click();
  const ms = await finished;
  const puts = performance.getEntriesByType("resource").filter((e) => e.name.startsWith(aws));
  const putsMs = Math.max(...puts.map((e) => e.responseEnd))
    - Math.min(...puts.map((e) => e.startTime));
  return {ms, puts_ms: putsMs, puts: puts.length};
}
"""

# The baseline: the same API calls, and every part sent with a plain `fetch`
# PUT of a slice of the same File, all at once (the browser runs as many at a
# time as it allows per host). No hashing (the digest is given), no progress.
BASELINE_SCRIPT = """
async ([version, sha256, aws]) => {
  const file = document.querySelector("input[name=file]").files[0];
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const api = document.getElementById("upload-form").dataset.api;
  const post = async (path, body) => {
    const response = await fetch(api + path, {
      method: "POST", credentials: "same-origin", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf}});
    if (!response.ok) throw new Error(path + " " + response.status + " " + await response.text());
    return response.json();
  };
  performance.clearResourceTimings();
  const t0 = performance.now();
  const plan = await post("", {version, filename: "model.pt", size: file.size, sha256: null,
    format: "torchscript", input: {shape: [4], dtype: "float32"}, notes: "", metrics: {}});
  const parts = await Promise.all(plan.parts.map(async (p) => {
    const start = (p.part_number - 1) * plan.part_size;
    const response = await fetch(p.url, {method: "PUT",
      body: file.slice(start, Math.min(start + plan.part_size, file.size))});
    if (!response.ok) throw new Error("part " + p.part_number + ": " + response.status);
    return {part_number: p.part_number, etag: response.headers.get("ETag")};
  }));
  await post("/" + plan.upload_id + "/complete", {parts, sha256});
  const ms = performance.now() - t0;
  const puts = performance.getEntriesByType("resource").filter((e) => e.name.startsWith(aws));
  const putsMs = Math.max(...puts.map((e) => e.responseEnd))
    - Math.min(...puts.map((e) => e.startTime));
  return {ms, puts_ms: putsMs, puts: puts.length};
}
"""


def chromium_version() -> str:
    import subprocess

    result = subprocess.run(
        ["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=False
    )
    words = result.stdout.split()
    return " ".join(words[:2]) if words else "chromium"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def chromium_uploads(
    stack: Stack, password: str, path: Path, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Upload ``path`` through the page and with the plain-fetch baseline,
    ``rounds`` times each, alternating who goes first, in one Chromium."""
    from playwright.sync_api import sync_playwright

    sha256 = file_sha256(path)
    runs: dict[str, list[dict[str, float]]] = {"page": [], "fetch": []}
    dashboard = stack.dashboard_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(600_000)
            page.goto(f"{dashboard}/login/")
            page.fill("input[name=username]", "bench")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url("**/models/")

            def ours(version: str) -> dict[str, float]:
                page.goto(f"{dashboard}/models/{MODEL}/upload/")
                page.fill("input[name=version]", version)
                page.fill("input[name=shape]", "4")
                page.set_input_files("input[name=file]", str(path))
                result = page.evaluate(OURS_SCRIPT, stack.aws_url)
                return {k: float(v) for k, v in result.items()}

            def baseline(version: str) -> dict[str, float]:
                page.goto(f"{dashboard}/models/{MODEL}/upload/")
                page.set_input_files("input[name=file]", str(path))
                result = page.evaluate(BASELINE_SCRIPT, [version, sha256, stack.aws_url])
                return {k: float(v) for k, v in result.items()}

            ours("chromium-warm-up")
            forget(stack, f"models/{MODEL}/chromium-warm-up/")
            for round_ in range(rounds):
                order = (("page", ours), ("fetch", baseline))
                for kind, run in order if round_ % 2 == 0 else reversed(order):
                    version = f"chromium-{kind}-{round_}"
                    result = run(version)
                    forget(stack, f"models/{MODEL}/{version}/")
                    runs[kind].append(result)
                    print(
                        f"  chromium {kind}: {result['ms'] / 1000:.2f} s "
                        f"(parts {result['puts_ms'] / 1000:.2f} s)",
                        flush=True,
                    )
            context.close()
        finally:
            browser.close()
    return runs


def forget(stack: Stack, prefix: str) -> None:
    """Delete every version under ``prefix``, so each upload meets moto holding
    the same data (it keeps every object in memory or temporary files)."""
    s3 = stack.s3()
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    for item in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
        s3.delete_object(Bucket=BUCKET, Key=item["Key"], VersionId=item["VersionId"])


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def report(data: dict[str, Any]) -> str:
    size = data["size"]
    runs = data["runs"]

    def median(kind: str, field: str = "seconds") -> float:
        return statistics.median(r[field] for r in runs[kind])

    ours, bare, boto = median("ours"), median("bare"), median("boto3")
    ratio = boto / ours
    growth = data["peak_growth"]
    n = len(runs["ours"])
    rows = [
        [
            f"throughput, {size // MIB} MiB file (median of {n})",
            f"{mb(size / ours)}/s",
            f"{mb(size / boto)}/s",
            f"{ratio:.2f}x",
            "≥ 0.8x",
            "yes" if ratio >= 0.8 else "**no**",
        ],
        [
            "dashboard worker's peak memory growth during the uploads",
            mb(growth),
            "-",
            "-",
            "< 20 MB",
            "yes" if growth < 20e6 else "**no**",
        ],
        [
            "control: the same S3 calls without the dashboard, throughput",
            f"{mb(size / bare)}/s",
            f"{mb(size / boto)}/s",
            f"{boto / bare:.2f}x",
            "-",
            "-",
        ],
        [
            "of which CompleteMultipartUpload (moto assembling the object), median",
            f"{median('ours', 'complete_seconds'):.2f} s",
            f"{median('boto3', 'complete_seconds'):.2f} s",
            f"{median('ours', 'complete_seconds') / median('boto3', 'complete_seconds'):.2f}x",
            "-",
            "-",
        ],
    ]

    def listed(kind: str) -> str:
        return ", ".join(f"{r['seconds']:.1f} s" for r in runs[kind])

    chromium = data.get("chromium")
    chromium_text: list[str] = []
    if chromium:
        csize = data["chromium_size"]

        def cmedian(kind: str, field: str = "ms") -> float:
            return statistics.median(r[field] for r in chromium[kind]) / 1000

        page, fetch = cmedian("page"), cmedian("fetch")
        page_puts, fetch_puts = cmedian("page", "puts_ms"), cmedian("fetch", "puts_ms")
        cratio = fetch / page

        def clisted(kind: str) -> str:
            return ", ".join(f"{r['ms'] / 1000:.1f} s" for r in chromium[kind])

        chromium_text = [
            "",
            f"In Chromium (Debian's {data.get('chromium_version', 'chromium')}, headless, "
            "driven by Playwright): the same dashboard and moto server, a "
            f"{csize // MIB} MiB file of random bytes picked in the upload page's file input. "
            "Ours: the page's own flow (static/js/upload.js), from the click on Upload to the "
            "page saying the version is uploaded: start through the API, every part PUT as a "
            "slice of the File (6 at a time), the SHA-256 of the whole file computed in a Web "
            "Worker meanwhile, then complete. Baseline, in the same browser and run: the same "
            "API calls from the same page with plain `fetch`, every part PUT at once with "
            "`fetch` (the browser sends as many at a time as it allows per host), no hashing "
            "(the digest is given), no progress. Each timed in the page, "
            f"{len(chromium['page'])} rounds alternating who goes first (ours "
            f"{clisted('page')}; baseline {clisted('fetch')}).",
            "",
            table(
                ["measurement", "ours (page)", "plain fetch PUTs", "ratio", "target", "met?"],
                [
                    [
                        f"throughput, {csize // MIB} MiB file, whole upload (median)",
                        f"{mb(csize / page)}/s",
                        f"{mb(csize / fetch)}/s",
                        f"{cratio:.2f}x",
                        "≥ 0.9x",
                        "yes" if cratio >= 0.9 else "**no**",
                    ],
                    [
                        "the part PUTs alone, first start to last end (median)",
                        f"{page_puts:.2f} s",
                        f"{fetch_puts:.2f} s",
                        f"{fetch_puts / page_puts:.2f}x",
                        "-",
                        "-",
                    ],
                ],
            ),
        ]
    return "\n".join(
        [
            f"`python bench/bench_upload.py` on {data['date']}: {data['machine']}. "
            f"A {size // MIB} MiB file of random bytes, uploaded to the embedded S3 "
            "(moto's server) through the dashboard's browser flow, the HTTP calls of "
            "static/js/upload.js made with httpx: start the upload through the API "
            f"(token auth), PUT {data['parts']} parts of {data['part_size'] // MIB} MiB to "
            f"their presigned URLs {PARALLEL} at a time, hashing the file on the way, then "
            "complete it through the API. Baseline, in the same run against the same moto "
            "server: boto3's `upload_file` with the default TransferConfig (8 MiB parts, "
            "10 threads, CRC32 checksums). Control: the browser flow's S3 calls made "
            "directly, without the dashboard. The three take turns, each round in another "
            "order; every object is deleted after its upload, so each one meets moto in "
            "the same state; each is timed from its first request to the last answer "
            f"(ours {listed('ours')}; boto3 {listed('boto3')}; control {listed('bare')}). "
            "The dashboard runs under gunicorn, one worker process with four threads; its "
            "memory is that worker's VmRSS before the first measured upload (after a warm-up "
            "upload) against its peak VmHWM (reset first through /proc/<pid>/clear_refs) "
            f"after the last (before {mb(data['rss_before'])}, peak {mb(data['hwm_after'])}).",
            "",
            table(["measurement", "ours", "boto3 upload_file", "ratio", "target", "met?"], rows),
            *chromium_text,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    parser.add_argument("--mib", type=int, default=256 if quick else 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--chromium-mib", type=int, default=256, help="file size in Chromium (0: skip)"
    )
    parser.add_argument("--chromium-rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    size = args.mib * MIB
    data: dict[str, Any] = {
        "size": size,
        "date": datetime.now(UTC).date().isoformat(),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs shared by every process "
            f"(load average {os.getloadavg()[0]:.1f} at the start)"
        ),
    }
    with Stack(prefix="modeldeck-bench-upload-") as stack:
        port = free_port()
        stack.env["MODELDECK_DASHBOARD_PORT"] = str(port)
        stack.start_redis()
        stack.start_aws(cors_origin=f"http://127.0.0.1:{port}")
        stack.migrate()
        password = secrets.token_urlsafe(12)
        token = stack.django("users", "--password", password)["token"]
        web = stack.start_dashboard(workers=1, threads=4)
        (worker,) = stack.worker_pids(web)
        print(f"writing a {args.mib} MiB file", flush=True)
        warm = stack.root / "warm.pt"
        make_file(warm, 40 * MIB)
        big = stack.root / "model.pt"
        make_file(big, size)
        # Warm-up: every import and connection on the upload path, both ways.
        browser_flow(stack.dashboard_url, token, warm, "warm-up")
        boto3_upload(stack, warm, "baseline/warm-up.pt")
        data["rss_before"] = read_proc_status(worker)["VmRSS"]
        hwm_before = read_proc_status(worker)["VmHWM"]
        can_reset = reset_peak_rss(worker)
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "boto3": [], "bare": []}
        order = ["ours", "boto3", "bare"]
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
            # A different order each round: no kind always goes first.
            for kind in order[round_ % 3 :] + order[: round_ % 3]:
                if kind == "ours":
                    version = f"big-{round_}"
                    result = browser_flow(stack.dashboard_url, token, big, version)
                    data.update(parts=result["parts"], part_size=result["part_size"])
                    forget(stack, f"models/{MODEL}/{version}/")
                elif kind == "boto3":
                    result = boto3_upload(stack, big, f"baseline/big-{round_}.pt")
                    forget(stack, f"baseline/big-{round_}.pt")
                else:
                    part_size = int(data.get("part_size") or 16 * MIB)
                    result = bare_flow(stack, big, f"control/big-{round_}.pt", part_size)
                    forget(stack, f"control/big-{round_}.pt")
                runs[kind].append(result)
                print(
                    f"  {kind}: {result['seconds']:.2f} s "
                    f"(complete {result['complete_seconds']:.2f} s)",
                    flush=True,
                )
        status = read_proc_status(worker)
        data["hwm_after"] = status["VmHWM"]
        base = data["rss_before"] if can_reset else hwm_before
        data["peak_growth"] = max(0, data["hwm_after"] - base)
        data["runs"] = runs
        if args.chromium_mib and ensure_debian_package("chromium", "chromium"):
            small = stack.root / "chromium.pt"
            make_file(small, args.chromium_mib * MIB)
            print(f"in Chromium: a {args.chromium_mib} MiB file", flush=True)
            data["chromium"] = chromium_uploads(stack, password, small, args.chromium_rounds)
            data["chromium_version"] = chromium_version()
            data["chromium_size"] = args.chromium_mib * MIB
    text = report(data)
    print(text)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        write_subsection(TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
