"""The embedded AWS of the local stack and the tests: moto's server, in a thread.

``start_moto_server()`` runs moto's HTTP server on a thread of the calling
process and returns a handle with its ``endpoint_url``; ``bootstrap()`` gives
that AWS the models bucket the contract describes (section 1). From a shell::

    python -m devstack.embedded_aws --port 5000 \\
        [--bucket modeldeck-models --cors-origin http://127.0.0.1:8000 --region us-east-1]

runs the server in the foreground (bootstrapping the bucket first when
``--bucket`` is given) until SIGTERM or SIGINT, then exits 0.

State lives in the process's memory; with ``--state-file`` the S3 objects and
SSM parameters are saved there on stop (and every minute) and loaded at start
(``devstack/aws_state.py``), which is how the local stack keeps them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# moto accepts any credentials; fixed fake ones keep a developer's real
# credentials from ever being sent to (or needed by) the embedded AWS.
ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
# A backstop for the dashboard's own janitor (UPLOAD_ABANDON_AFTER_HOURS, 24 h by
# default): parts of an upload nobody completes stop costing storage even if the
# dashboard's beat is not running.
ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS = 2


class EmbeddedAwsError(RuntimeError):
    """The embedded AWS could not be started."""


class PortInUseError(EmbeddedAwsError):
    """Something else already listens on the requested address."""


class _MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer that reports a failed bind instead of hanging.

    The stock ``start()`` waits forever for a ready signal that a failed bind
    never sends (werkzeug calls ``sys.exit`` inside the server thread).
    """

    startup_error: BaseException | None = None

    def _server_entry(self) -> None:
        try:
            super()._server_entry()
        except BaseException as exc:  # werkzeug raises SystemExit when it cannot bind
            self.startup_error = exc
            self._server_ready_event.set()

    def close(self) -> None:
        self.stop()
        if self._server is not None:
            # stop() shuts the loop down but leaves the listening socket open.
            self._server.server_close()


@dataclass
class EmbeddedAws:
    """A running moto server; ``stop()`` (or leaving the ``with`` block) ends it."""

    host: str
    port: int
    _server: _MotoServer

    @property
    def endpoint_url(self) -> str:
        """Return the URL clients should use as ``endpoint_url``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port; waits for the server thread to end."""
        self._server.close()

    def __enter__(self) -> EmbeddedAws:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_moto_server(host: str = "127.0.0.1", port: int = 5000) -> EmbeddedAws:
    """Start moto's server on a daemon thread and return once it accepts connections.

    ``port=0`` picks a free port (read it from the handle). Raises
    PortInUseError when the address is taken, EmbeddedAwsError on any other
    startup failure.
    """
    _check_port_free(host, port)
    server = _MotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    if server.startup_error is not None:
        # Lost a race for the port after the check above, or a stranger failure.
        raise EmbeddedAwsError(
            f"moto's server could not listen on {host}:{port}: {server.startup_error!r}"
        ) from server.startup_error
    bound_host, bound_port = server.get_host_and_port()
    logger.info("Embedded AWS listening on %s:%s", bound_host, bound_port)
    return EmbeddedAws(host=host, port=bound_port, _server=server)


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Same option werkzeug's server uses, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise PortInUseError(
            f"Cannot start the embedded AWS on {host}:{port}: {exc.strerror or exc}. "
            f"Another program (perhaps an earlier embedded AWS) is using the port; "
            f"stop it or choose another port."
        ) from exc
    finally:
        probe.close()


def s3_client(*, endpoint_url: str, region: str) -> S3Client:
    """Return an S3 client for the embedded AWS (fake credentials, path-style URLs)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(
            # A host such as "localhost" has no per-bucket DNS names.
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def bootstrap(*, endpoint_url: str, region: str, bucket: str, cors_origins: list[str]) -> None:
    """Create or update the models bucket so it matches the contract; safe to repeat.

    Sets versioning, SSE-S3 default encryption, a CORS rule for browser uploads
    from ``cors_origins`` and a lifecycle rule that aborts multipart uploads
    left incomplete for ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS (2) days. The
    configurations are replaced, not merged.
    """
    if not cors_origins:
        raise ValueError("cors_origins must name at least one origin (the dashboard's)")
    s3 = s3_client(endpoint_url=endpoint_url, region=region)
    _ensure_bucket(s3, bucket=bucket, region=region)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": list(cors_origins),
                    "AllowedMethods": ["GET", "PUT", "HEAD", "POST"],
                    "AllowedHeaders": ["*"],
                    # Browsers hide ETag from scripts unless exposed; multipart
                    # completion needs each part's ETag.
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )
    try:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "abort-incomplete-multipart-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {
                            "DaysAfterInitiation": ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS
                        },
                    }
                ]
            },
        )
    except ClientError as exc:
        # Only an emulator lacking the API is tolerated; anything else is a real error.
        if exc.response.get("Error", {}).get("Code") not in ("NotImplemented", "501"):
            raise
        logger.warning(
            "The embedded AWS does not support bucket lifecycle rules; "
            "incomplete multipart uploads in %s will not expire",
            bucket,
        )
    logger.info("Bucket %s is ready at %s", bucket, endpoint_url)


def _ensure_bucket(s3: S3Client, *, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    try:
        if region == "us-east-1":
            # us-east-1 is the one region that refuses an explicit LocationConstraint.
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


def main(argv: list[str] | None = None) -> int:
    """Run the embedded AWS until SIGTERM/SIGINT; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.embedded_aws",
        description="Run moto's server (the embedded AWS) in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--bucket", help="bootstrap this models bucket once the server is up")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="origin allowed to upload from a browser (repeatable; default the dashboard's)",
    )
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument(
        "--state-file", help="keep S3 and SSM in this file across restarts (saved on stop)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One line per AWS call drowns everything else in the local stack's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from devstack.aws_state import load_state, save_state

    state_file = Path(args.state_file) if args.state_file else None
    if state_file is not None and load_state(state_file):
        logger.info("Embedded AWS: loaded S3 and SSM from %s", state_file)
    try:
        aws = start_moto_server(host=args.host, port=args.port)
    except EmbeddedAwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # moto builds some resource URLs (e.g. SQS queue URLs) from MOTO_PORT, as its own CLI sets it.
    os.environ.setdefault("MOTO_PORT", str(aws.port))
    try:
        if args.bucket:
            bootstrap(
                endpoint_url=aws.endpoint_url,
                region=args.region,
                bucket=args.bucket,
                cors_origins=args.cors_origin or ["http://127.0.0.1:8000"],
            )
        # A supervisor (or a test) waits for this line to know the server is usable.
        print(f"Embedded AWS ready at {aws.endpoint_url}", flush=True)
        while not stop.wait(60.0):
            if state_file is not None:
                save_state(state_file)
    finally:
        aws.stop()
        if state_file is not None and save_state(state_file):
            logger.info("Embedded AWS: saved S3 and SSM to %s", state_file)
    logger.info("Embedded AWS stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
