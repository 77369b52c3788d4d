"""``python -m devstack.apprunner --config PATH [--host 127.0.0.1] [--port 5100]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from devstack.apprunner.config import ConfigError, load_config
from devstack.apprunner.observability import DEFAULT_PERCENTILES_NAMESPACE, CloudWatchShipper
from devstack.apprunner.server import StandIn


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGTERM/SIGINT; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m devstack.apprunner",
        description="Local stand-in for AWS App Runner: runs, health-checks and swaps "
        "service instances behind stable URLs and serves App Runner's API.",
    )
    parser.add_argument("--config", required=True, help="JSON configuration file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5100, help="API port (0: any free port)")
    parser.add_argument(
        "--cloudwatch",
        action="store_true",
        help="ship logs and metrics to CloudWatch (Logs) as App Runner does, at "
        "AWS_ENDPOINT_URL (the embedded AWS) or real AWS",
    )
    parser.add_argument(
        "--metrics-seconds",
        type=float,
        default=5.0,
        help="with --cloudwatch: how often metrics are published (App Runner: 60)",
    )
    parser.add_argument(
        "--percentiles-namespace",
        default=DEFAULT_PERCENTILES_NAMESPACE,
        help="with --cloudwatch: where pre-computed p50/p90/p99 go",
    )
    parser.add_argument(
        "--ecs-names",
        action="store_true",
        help="with --cloudwatch: ship logs and metrics under the names of an ECS Express "
        "service and its load balancer (the local stack on the ECS target)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s apprunner %(levelname)s %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"apprunner: {exc}", file=sys.stderr)
        return 2
    shipper = None
    if args.cloudwatch:
        if not args.metrics_seconds > 0:
            print("apprunner: --metrics-seconds must be positive", file=sys.stderr)
            return 2
        shipper = CloudWatchShipper(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            region=config.region,
            metrics_seconds=args.metrics_seconds,
            percentiles_namespace=args.percentiles_namespace,
            ecs=args.ecs_names,
        )
    try:
        asyncio.run(_serve(StandIn(config, host=args.host, port=args.port, shipper=shipper)))
    except OSError as exc:
        print(f"apprunner: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(stand_in: StandIn) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stand_in.start()
        await stop.wait()
    finally:
        await stand_in.stop()


if __name__ == "__main__":
    sys.exit(main())
