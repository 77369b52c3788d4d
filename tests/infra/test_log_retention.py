"""The custom resource in infra/environment.yaml that keeps App Runner's log
groups for LogRetentionDays: its inline handler, run as Lambda would run it,
against the embedded AWS, answering CloudFormation's presigned URL (here a
local HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType
from typing import Any

import boto3
import pytest

from tools.cfn import INFRA, load_template

GROUPS = [
    "/aws/apprunner/modeldeck-iris-staging/0a1b/application",
    "/aws/apprunner/modeldeck-iris-staging/0a1b/service",
]


@pytest.fixture
def handler_module() -> ModuleType:
    template = load_template(INFRA / "environment.yaml")
    code = template["Resources"]["LogRetentionFunction"]["Properties"]["Code"]["ZipFile"]
    module = ModuleType("index")
    exec(compile(code, "index.py", "exec"), module.__dict__)  # noqa: S102 (the template's own code)
    return module


@pytest.fixture
def cloudformation() -> Iterator[dict[str, Any]]:
    """A stand-in for the presigned S3 URL CloudFormation waits on."""
    received: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers["Content-Length"])
            received["body"] = json.loads(self.rfile.read(length))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received["url"] = f"http://127.0.0.1:{server.server_port}/response?signature=x"
    yield received
    server.shutdown()
    server.server_close()


def event(url: str, request_type: str, **properties: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/modeldeck-iris-staging/x",
        "RequestId": "r-1",
        "LogicalResourceId": "AppRunnerLogRetention",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", **properties},
    }


def retention(endpoint: str) -> dict[str, int | None]:
    logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/apprunner/")["logGroups"]
    return {g["logGroupName"]: g.get("retentionInDays") for g in groups}


def test_it_creates_the_groups_and_sets_retention(aws, handler_module, cloudformation) -> None:
    logs = boto3.client("logs", endpoint_url=aws, region_name="us-east-1")
    logs.create_log_group(logGroupName=GROUPS[0])  # App Runner may have made one already
    status = handler_module.handler(
        event(cloudformation["url"], "Create", LogGroups=GROUPS, RetentionInDays="30"), None
    )
    assert status == "SUCCESS"
    assert retention(aws) == {GROUPS[0]: 30, GROUPS[1]: 30}
    body = cloudformation["body"]
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == "AppRunnerLogRetention"
    assert (body["RequestId"], body["LogicalResourceId"]) == ("r-1", "AppRunnerLogRetention")

    handler_module.handler(
        event(cloudformation["url"], "Update", LogGroups=GROUPS, RetentionInDays="90"), None
    )
    assert retention(aws) == {GROUPS[0]: 90, GROUPS[1]: 90}


def test_delete_keeps_the_logs(aws, handler_module, cloudformation) -> None:
    handler_module.handler(
        event(cloudformation["url"], "Create", LogGroups=GROUPS, RetentionInDays="7"), None
    )
    status = handler_module.handler(event(cloudformation["url"], "Delete", LogGroups=GROUPS), None)
    assert status == "SUCCESS" and cloudformation["body"]["Status"] == "SUCCESS"
    assert retention(aws) == {GROUPS[0]: 7, GROUPS[1]: 7}


def test_a_failure_is_reported_to_cloudformation_not_left_hanging(
    aws, handler_module, cloudformation
) -> None:
    status = handler_module.handler(event(cloudformation["url"], "Create", LogGroups=GROUPS), None)
    assert status == "FAILED"
    assert cloudformation["body"]["Status"] == "FAILED"
    assert cloudformation["body"]["Reason"] == "KeyError: 'RetentionInDays'"
