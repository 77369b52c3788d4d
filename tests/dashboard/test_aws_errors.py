"""What AWS says when it refuses (ARNs, account ids, role names) goes to the
log under an error id; viewers see the operation, the error code and the id;
admins may see AWS's words."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.test import Client, RequestFactory

from dashboard.aws.errors import AwsTransientError, translate
from dashboard.middleware import AwsErrorPageMiddleware
from tests.conftest import publish
from tests.dashboard.factories import make_environment

ROLE_ARN = "arn:aws:sts::123456789012:assumed-role/modeldeck-dashboard-role/i-0abc123"
SECRETS = ("arn:aws", "123456789012", "modeldeck-dashboard-role")


class _DenyEverything(BaseHTTPRequestHandler):
    """An AWS endpoint that refuses every call the way AWS does: S3 with an
    XML error, the JSON services (SSM, App Runner) with a JSON one."""

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        target = self.headers.get("X-Amz-Target", "")
        operation = target.rpartition(".")[2] or "s3"
        message = f"User: {ROLE_ARN} is not authorized to perform: {operation}"
        if target:
            body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
        else:
            body = (
                f"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
                f"<Message>{message}</Message><RequestId>r</RequestId></Error>"
            ).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _deny

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def denied(
    aws: str, personas: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The registry is filled through the embedded AWS, then every AWS call
    goes to an endpoint that refuses it."""
    from dashboard.aws.clients import reset_clients

    publish("iris", "1.0", tmp_path)
    make_environment("iris", "staging")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyEverything)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr("django.conf.settings.AWS_MAX_ATTEMPTS", 1)
    reset_clients()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        reset_clients()


def signed_in(personas: Any, name: str) -> Client:
    client = Client()
    client.force_login(personas[name])
    return client


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_pages_name_the_operation_and_an_error_id_not_what_aws_said(
    denied: None, personas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = signed_in(personas, "deployer")
    with caplog.at_level(logging.INFO, logger="dashboard.aws.errors"):
        html = client.get("/models/iris/").content.decode()
        refreshed = client.post("/models/iris/refresh", follow=True).content.decode()
    assert "GetParameter failed (AccessDeniedException); error id " in html
    assert "Could not read S3: ListObjectsV2 failed (AccessDenied); error id " in refreshed
    assert_no_secrets(html)
    assert_no_secrets(refreshed)
    # the log has AWS's words under the id the page showed
    error_id = html.split("GetParameter failed (AccessDeniedException); error id ")[1][:8]
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert logged and ROLE_ARN in logged[0]


def test_the_api_gives_viewers_an_error_id_and_admins_the_detail(
    denied: None, personas: Any
) -> None:
    body = {
        "version": "2.0",
        "filename": "model.pt",
        "size": 10,
        "input": {"shape": [4], "dtype": "float32"},
    }
    for name in ("deployer", "admin"):
        response = signed_in(personas, name).post(
            "/api/models/iris/uploads",
            data=json.dumps(body),
            content_type="application/json",
        )
        assert response.status_code == 502, response.content
        answer = response.json()
        assert answer["detail"].startswith("AWS call failed: ListObjectsV2 failed (AccessDenied)")
        assert len(answer["error_id"]) == 8 and answer["error_id"] in answer["detail"]
        assert_no_secrets(answer["detail"])
        if name == "admin":
            assert ROLE_ARN in answer["aws_detail"]
        else:
            assert "aws_detail" not in answer
            assert_no_secrets(response.content.decode())


def test_a_failed_promote_does_not_show_aws_text(denied: None, personas: Any) -> None:
    response = signed_in(personas, "deployer").post(
        "/api/models/iris/environments/staging/promote",
        data=json.dumps({"version": "1.0"}),
        content_type="application/json",
    )
    assert response.status_code == 502
    assert "GetParameter failed (AccessDeniedException); error id" in response.json()["detail"]
    assert_no_secrets(response.content.decode())


def test_an_unhandled_aws_error_on_a_page_is_the_problem_page(
    personas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    error = translate(
        ClientError(
            {
                "Error": {
                    "Code": "ThrottlingException",
                    "Message": f"Rate exceeded for {ROLE_ARN}",
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "GetParameter",
        ),
        operation="GetParameter",
    )
    assert isinstance(error, AwsTransientError)
    assert str(error) == f"GetParameter failed (ThrottlingException); error id {error.error_id}"
    middleware = AwsErrorPageMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]
    for name, shows_detail in (("viewer", False), ("admin", True)):
        request = RequestFactory().get("/models/iris/")
        request.user = personas[name]
        response = middleware.process_exception(request, error)
        assert response is not None and response.status_code == 503
        html = response.content.decode()
        assert error.error_id in html and "GetParameter failed" in html
        assert (ROLE_ARN in html) is shows_detail
    api_request = RequestFactory().get("/api/models")
    api_request.user = personas["viewer"]
    assert middleware.process_exception(api_request, error) is None
