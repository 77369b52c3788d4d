#!/usr/bin/env python3
"""Upload a model file to ModelDeck from a CI pipeline (needs only httpx).

    MODELDECK_URL=https://deck.example.com MODELDECK_TOKEN=mdk_... \\
    python tools/modeldeck_upload.py iris 2026.11.24.1 model.pt --shape 4 --dtype float32 \\
        --notes "nightly" --metric accuracy=0.97 [--wait]

The bytes go straight to S3 through presigned multipart URLs (4 parts in
parallel); the SHA-256 is computed while reading. With --wait it polls until
validation ends and exits non-zero if the version is invalid; while polling it
retries dropped connections, timeouts and 502/503/504 answers with backoff
until --wait-timeout.

Re-running is safe: when the version already exists with the same SHA-256 and
size (an earlier run uploaded it, e.g. one that died while waiting), nothing is
uploaded again, "already uploaded" is printed and the run counts as a success
(with --wait it waits for that version's validation as usual).

Exit status:
  0  uploaded, or already uploaded with the same SHA-256 (with --wait: and valid)
  1  an error (message on stderr), or with --wait: the version is invalid
  3  the version already exists with different contents (or an unfinished
     upload holds the name): retrying will not help, pick a new version
  4  with --wait: validation had not ended within --wait-timeout
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


EXIT_CONFLICT = 3
EXIT_WAIT_TIMEOUT = 4
# Answers of a proxy or load balancer while the dashboard restarts: worth retrying.
TRANSIENT_STATUSES = {502, 503, 504}


def detail_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):
        return response.text


def fail(response: httpx.Response) -> None:
    sys.exit(f"error {response.status_code}: {detail_of(response)}")


def search_params(version: str) -> dict[str, str | int]:
    # The search matches text anywhere (100 characters at most): the exact
    # version is picked out of the answer.
    return {"q": version[:100], "page_size": 200}


def find_version(api: httpx.Client, model: str, version: str) -> dict[str, Any] | None:
    """The version as the API lists it, or None."""
    page = api.get(f"/api/models/{model}/versions", params=search_params(version))
    if page.status_code != 200:
        fail(page)
    match = [v for v in page.json()["items"] if v["version"] == version]
    return match[0] if match else None


def wait_for(api: httpx.Client, args: argparse.Namespace) -> int:
    """Poll until the version's validation ends. The upload is done by now, so
    a dropped connection, a timeout or a 502/503/504 (the dashboard restarting
    behind its load balancer) is retried with backoff until --wait-timeout
    rather than ending the run: a re-run could not upload the version again."""
    deadline = time.monotonic() + args.wait_timeout
    delay = args.poll_seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print(
                f"{args.version}: validation had not ended after {args.wait_timeout:g}s "
                "(the upload itself is complete)",
                file=sys.stderr,
            )
            return EXIT_WAIT_TIMEOUT
        time.sleep(min(delay, left))
        try:
            page = api.get(f"/api/models/{args.model}/versions", params=search_params(args.version))
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if page.status_code not in TRANSIENT_STATUSES:
                if page.status_code != 200:
                    fail(page)
                match = [v for v in page.json()["items"] if v["version"] == args.version]
                if match and match[0]["status"] in {"valid", "invalid"}:
                    print(
                        f"{args.version}: {match[0]['status']} {match[0]['status_detail']}".rstrip()
                    )
                    return 0 if match[0]["status"] == "valid" else 1
                delay = args.poll_seconds
                continue
            problem = f"HTTP {page.status_code}"
        print(f"polling {args.version}: {problem}; retrying", file=sys.stderr)
        delay = min(max(delay * 2, 1.0), 30.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("version")
    parser.add_argument("file", type=Path)
    parser.add_argument("--shape", required=True, help="one example's shape, e.g. 4 or 3,224,224")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--format", choices=["torchscript", "torch.export"])
    parser.add_argument("--notes", default="")
    parser.add_argument("--metric", action="append", default=[], help="name=number")
    parser.add_argument("--wait", action="store_true", help="wait for validation to finish")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=3600,
        help="seconds --wait waits for validation (default 3600); then exit 4",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=2, help="seconds between polls (default 2)"
    )
    parser.add_argument("--url", default=os.environ.get("MODELDECK_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args(argv)
    token = os.environ.get("MODELDECK_TOKEN")
    if not token:
        sys.exit(
            "set MODELDECK_TOKEN to an API token (Settings page, or manage.py create_api_token)"
        )
    headers = {"Authorization": f"Token {token}"}
    size = args.file.stat().st_size
    metrics = {}
    for item in args.metric:
        name, _, value = item.partition("=")
        metrics[name] = float(value)
    api = httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=60)
    sha256 = sha256_of(args.file)
    started = api.post(
        f"/api/models/{args.model}/uploads",
        json={
            "version": args.version,
            "filename": args.file.name,
            "size": size,
            "sha256": sha256,
            "format": args.format,
            "input": {"shape": [int(d) for d in args.shape.split(",")], "dtype": args.dtype},
            "notes": args.notes,
            "metrics": metrics,
        },
    )
    if started.status_code == 409:
        existing = find_version(api, args.model, args.version)
        if (
            existing is not None
            and existing.get("sha256") == sha256
            and existing.get("size") == size
            and existing.get("status") != "uploading"
        ):
            print(
                f"{args.model} {args.version} is already uploaded with the same SHA-256 "
                f"({sha256}): nothing to do ({existing['status']})"
            )
            return wait_for(api, args) if args.wait else 0
        print(f"error 409: {detail_of(started)}", file=sys.stderr)
        if existing is not None and existing.get("status") == "uploading":
            print(
                "an unfinished upload holds this version name: cancel it in the dashboard "
                "(or wait for it to expire), or upload under a new version",
                file=sys.stderr,
            )
        elif existing is not None:
            print(
                f"the existing {args.version} has a different SHA-256 "
                f"({existing.get('sha256')}) or size: upload under a new version",
                file=sys.stderr,
            )
        return EXIT_CONFLICT
    if started.status_code != 201:
        fail(started)
    plan: dict[str, Any] = started.json()
    part_size = plan["part_size"]

    urls = {int(p["part_number"]): p["url"] for p in plan["parts"]}
    renew = threading.Lock()

    def fresh_url(number: int, stale: str) -> str:
        # Part URLs live minutes (UPLOAD_URL_EXPIRES_SECONDS): one that S3
        # refused with 403 has expired; the upload's status hands out new ones.
        with renew:
            if urls[number] == stale:
                status = api.get(f"/api/models/{args.model}/uploads/{plan['upload_id']}")
                if status.status_code != 200:
                    fail(status)
                urls.update({int(p["part_number"]): p["url"] for p in status.json()["parts"]})
            return urls[number]

    def put(part: dict[str, Any]) -> dict[str, Any]:
        number = int(part["part_number"])
        with args.file.open("rb") as fh:
            fh.seek((number - 1) * part_size)
            data = fh.read(part_size)
        for attempt in range(3):
            url = urls[number]
            try:
                # httpx sends Content-Length = len(data): the exact part size
                # the URL was signed for.
                response = httpx.put(url, content=data, timeout=300)
                if response.status_code == 403 and attempt < 2:
                    fresh_url(number, url)
                    continue
                response.raise_for_status()
                return {"part_number": number, "etag": response.headers["ETag"]}
            except httpx.HTTPError:
                if attempt == 2:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            parts = sorted(pool.map(put, plan["parts"]), key=lambda p: p["part_number"])
    except httpx.HTTPError as exc:
        api.delete(f"/api/models/{args.model}/uploads/{plan['upload_id']}")
        sys.exit(f"upload to S3 failed ({exc}); the upload was cancelled")
    done = api.post(
        f"/api/models/{args.model}/uploads/{plan['upload_id']}/complete", json={"parts": parts}
    )
    if done.status_code != 201:
        fail(done)
    print(f"uploaded {args.model} {args.version} ({size} bytes): {done.json()['status']}")
    return wait_for(api, args) if args.wait else 0


if __name__ == "__main__":
    raise SystemExit(main())
