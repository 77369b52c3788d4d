"""Print the pointer document of one uploaded version (CONTRACT.md section 2).

    python -m tools.first_pointer --bucket BUCKET iris 2026.11.24.1 [--reason "first deploy"]

An environment's inference service needs a pointer to start on, and
CloudFormation creates the pointer parameter with the service
(infra/environment.yaml's InitialPointer). This reads the version's
manifest.json (written by the dashboard on upload) and the artifact's current
S3 object version, checks they agree, and prints the pointer that pins them.
After that first deployment the dashboard writes every pointer itself.
Needs only boto3 and the caller's credentials (s3:GetObject, s3:GetObjectVersion).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError

MODEL = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PointerError(Exception):
    """The version cannot be pinned; the message says why."""


def build_pointer(
    s3: Any,
    *,
    bucket: str,
    model: str,
    version: str,
    promoted_by: str,
    reason: str,
    now: dt.datetime,
) -> dict[str, Any]:
    if not MODEL.match(model):
        raise PointerError(f"{model!r} is not a model name ({MODEL.pattern})")
    if not VERSION.match(version):
        raise PointerError(f"{version!r} is not a version name ({VERSION.pattern})")
    prefix = f"models/{model}/{version}/"
    try:
        manifest = json.loads(
            s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
        )
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code in {"NoSuchKey", "404"}:
            raise PointerError(
                f"s3://{bucket}/{prefix}manifest.json does not exist: upload the version "
                "through the dashboard (tools/modeldeck_upload.py) first"
            ) from exc
        raise PointerError(f"reading the manifest failed: {code}") from exc
    except ValueError as exc:
        raise PointerError(f"s3://{bucket}/{prefix}manifest.json is not JSON") from exc
    missing = [f for f in ("artifact", "format", "sha256", "size", "input") if f not in manifest]
    if missing:
        raise PointerError(f"the manifest lacks {', '.join(missing)}")
    if not SHA256.match(str(manifest["sha256"])):
        raise PointerError("the manifest's sha256 is not 64 hex digits")
    key = prefix + str(manifest["artifact"])
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise PointerError(f"s3://{bucket}/{key} does not exist") from exc
    version_id = head.get("VersionId")
    if not version_id or version_id == "null":
        raise PointerError(f"s3://{bucket}/{key} has no version id: enable versioning on {bucket}")
    if int(head["ContentLength"]) != int(manifest["size"]):
        raise PointerError(
            f"s3://{bucket}/{key} has {head['ContentLength']} bytes, the manifest says "
            f"{manifest['size']}: upload the version again"
        )
    return {
        "schema": 1,
        "model": model,
        "version": version,
        "bucket": bucket,
        "key": key,
        "s3_version_id": version_id,
        "sha256": manifest["sha256"],
        "size": int(manifest["size"]),
        "format": manifest["format"],
        "input": manifest["input"],
        "promoted_by": promoted_by,
        "promoted_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reason": reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.first_pointer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model")
    parser.add_argument("version")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--reason", default="first deployment")
    parser.add_argument("--promoted-by", default=getpass.getuser())
    args = parser.parse_args(argv)
    try:
        pointer = build_pointer(
            boto3.client("s3"),
            bucket=args.bucket,
            model=args.model,
            version=args.version,
            promoted_by=args.promoted_by,
            reason=args.reason,
            now=dt.datetime.now(dt.UTC),
        )
    except PointerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(pointer, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
