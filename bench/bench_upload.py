"""Benchmark of the browser upload against boto3's upload_file; writes the
"Browser upload" part of the "Registry" section of docs/benchmarks.md.

    .venv/bin/python bench/bench_upload.py [--mib 1024] [--rounds 3] [--no-write]

``BENCH_QUICK=1`` shrinks the file to 256 MiB. Everything runs on this
machine, on 127.0.0.1 only:

- the dashboard under gunicorn (one worker process with four threads, so one
  process serves every request), its SQLite database, a private Redis, and
  the embedded AWS (moto's server, ``python -m devstack.embedded_aws``) with
  the models bucket set up as the contract says;
- "browser flow": the HTTP calls static/js/upload.js makes, made with httpx:
  ``POST /api/models/<m>/uploads``, then each part PUT to its presigned URL,
  four at a time, the file read in order one part ahead and hashed (SHA-256)
  on the way, then ``POST .../uploads/<id>/complete`` with the digest;
- baseline, in the same run against the same moto server: boto3's
  ``upload_file`` of the same file with the default TransferConfig;
- control: the browser flow's S3 calls made directly, without the dashboard,
  which shows how much of any difference is the dashboard's.

The three take turns for ``--rounds`` rounds, each round in another order, and
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
    free_port,
    read_proc_status,
    reset_peak_rss,
)

MODEL = "bench"
PARALLEL = 4  # upload.js's PARALLEL
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
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    quick = os.environ.get("BENCH_QUICK") == "1"
    parser.add_argument("--mib", type=int, default=256 if quick else 1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
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
        token = stack.django("users", "--password", secrets.token_urlsafe(12))["token"]
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
    text = report(data)
    print(text)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    if not args.no_write:
        write_subsection(TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
