#!/usr/bin/env python3
"""Upload a model file to ModelDeck from a CI pipeline (needs only httpx).

    MODELDECK_URL=https://deck.example.com MODELDECK_TOKEN=mdk_... \\
    python tools/modeldeck_upload.py iris 2026.11.24.1 model.pt --shape 4 --dtype float32 \\
        --notes "nightly" --metric accuracy=0.97 [--wait]

The bytes go straight to S3 through presigned multipart URLs (4 parts in
parallel); the SHA-256 is computed while reading. With --wait it polls until
validation ends and exits non-zero if the version is invalid.
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


def fail(response: httpx.Response) -> None:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    sys.exit(f"error {response.status_code}: {detail}")


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
    started = api.post(
        f"/api/models/{args.model}/uploads",
        json={
            "version": args.version,
            "filename": args.file.name,
            "size": size,
            "sha256": sha256_of(args.file),
            "format": args.format,
            "input": {"shape": [int(d) for d in args.shape.split(",")], "dtype": args.dtype},
            "notes": args.notes,
            "metrics": metrics,
        },
    )
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
    if not args.wait:
        return 0
    while True:
        time.sleep(2)
        page = api.get(f"/api/models/{args.model}/versions", params={"q": args.version}).json()
        match = [v for v in page["items"] if v["version"] == args.version]
        if match and match[0]["status"] in {"valid", "invalid"}:
            print(f"{args.version}: {match[0]['status']} {match[0]['status_detail']}".rstrip())
            return 0 if match[0]["status"] == "valid" else 1


if __name__ == "__main__":
    raise SystemExit(main())
