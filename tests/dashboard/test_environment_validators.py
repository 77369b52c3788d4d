"""What an admin types about an environment is checked by the rules it must
follow (dashboard/deployments/validators.py), in the admin form too; the live
check reads a bounded answer from an acceptable URL only."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from dashboard.deployments.live import MAX_VERSION_BYTES, live_version, tls_context
from dashboard.deployments.models import Environment
from dashboard.deployments.validators import (
    service_url_problem,
    validate_environment_name,
    validate_service_arn,
    validate_service_url,
    validate_ssm_parameter_name,
    validate_target_arn,
    validate_target_url,
)

ARN = "arn:aws:apprunner:us-east-1:123456789012:service/iris-prod/0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("name", ["production", "staging-2", "eu1"])
def test_good_environment_names(name: str) -> None:
    assert validate_environment_name(name) == name


@pytest.mark.parametrize(
    "name", ["Production", "prod env", "<script>", "x');alert(1)//", "-prod", "a" * 33, ""]
)
def test_bad_environment_names(name: str) -> None:
    with pytest.raises(ValidationError, match="environment name"):
        validate_environment_name(name)


@pytest.mark.parametrize(
    "name", ["/models/iris/production", "iris-production", "/a/b_c.d-e", "/" + "/".join("a" * 15)]
)
def test_good_ssm_parameter_names(name: str) -> None:
    assert validate_ssm_parameter_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/models/iris/production:7", "only contain"),
        ("/models/iris prod", "only contain"),
        ("/models/iris/é", "only contain"),
        ("models/iris", "must start with '/'"),
        ("/models//iris", "no empty level"),
        ("/models/iris/", "no empty level"),
        ("/" + "/".join("a" * 16), "at most 15 levels"),
        ("/aws/reference/secretsmanager/x", "reserved by AWS"),
        ("/SSM/x", "reserved by AWS"),
        ("awsTestParameter", "reserved by AWS"),
        ("/" + "a" * 1000, "too long"),
        ("", "required"),
    ],
)
def test_bad_ssm_parameter_names(name: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        validate_ssm_parameter_name(name)


def test_service_arns() -> None:
    assert validate_service_arn(ARN) == ARN
    for bad in (
        ARN.replace("apprunner", "ecs"),
        ARN + "/x",
        "arn:aws:apprunner:us-east-1:1:service/x/y",
    ):
        with pytest.raises(ValidationError, match="App Runner service ARN"):
            validate_service_arn(bad)


ECS_ARN = "arn:aws:ecs:us-east-1:123456789012:service/modeldeck/modeldeck-iris-prod"


def test_ecs_targets_take_a_long_service_arn_and_a_classic_one_needs_its_url() -> None:
    for target in ("ecs", "ecs_express"):
        assert validate_target_arn(target, ECS_ARN) == ECS_ARN
        for bad in (ARN, "arn:aws:ecs:us-east-1:123456789012:service/modeldeck-iris-prod"):
            with pytest.raises(ValidationError, match="ECS service ARN"):
                validate_target_arn(target, bad)
    with pytest.raises(ValidationError, match="needs its service URL"):
        validate_target_url("ecs", "")
    assert validate_target_url("ecs", "https://iris.example.com") == "https://iris.example.com"
    assert validate_target_url("ecs_express", "") == ""  # Express reports its URL
    assert validate_target_url("apprunner", "") == ""


def test_the_admin_form_takes_an_ecs_service(personas: Any) -> None:
    client = Client()
    client.force_login(personas["superuser"])
    form = {
        "model_name": "iris",
        "name": "production",
        "ssm_parameter": "/models/iris/production",
        "service_arn": ECS_ARN,
        "service_url": "",
        "target": "ecs",
        "position": 0,
    }
    response = client.post("/admin/deployments/environment/add/", form)
    assert response.status_code == 200 and "needs its service URL" in response.content.decode()
    assert not Environment.objects.exists()
    form["service_url"] = "https://iris.example.com"
    assert client.post("/admin/deployments/environment/add/", form).status_code == 302
    form.update(name="staging", ssm_parameter="/models/iris/staging", target="ecs_express")
    form["service_url"] = ""
    assert client.post("/admin/deployments/environment/add/", form).status_code == 302
    assert sorted(Environment.objects.values_list("target", flat=True)) == ["ecs", "ecs_express"]


@pytest.mark.parametrize(
    ("url", "production", "problem"),
    [
        ("https://abc.us-east-1.awsapprunner.com", True, None),
        ("https://10.0.3.7:8443/prefix", True, None),
        ("http://127.0.0.1:8080", False, None),  # the local stack
        ("http://abc.us-east-1.awsapprunner.com", True, "must use https"),
        ("ftp://example.com", False, "must use https or http"),
        ("http://169.254.169.254/latest/meta-data", False, "instance-metadata"),
        ("https://169.254.170.2/v2/credentials", True, "link-local"),
        ("http://[fe80::1]:80", False, "link-local"),
        ("http://[fd00:ec2::254]", False, "instance-metadata"),
        ("http://[::ffff:169.254.169.254]", False, "instance-metadata"),
        ("http://metadata.google.internal", False, "instance-metadata"),
        ("https://127.0.0.1", True, "loopback"),
        ("https://[::1]", True, "loopback"),
        ("https://localhost:8443", True, "loopback"),
        ("http://0.0.0.0:8080", False, "not a service address"),
        ("https://user:pw@example.com", True, "user name or password"),
        ("https://example.com/?x=1", True, "no query or fragment"),
        ("https://", True, "no host"),
        ("https://example.com:99999", True, "not a URL"),
    ],
)
def test_service_urls(url: str, production: bool, problem: str | None) -> None:
    found = service_url_problem(url, production=production, resolve=False)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_a_name_that_resolves_to_the_metadata_service_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DNS is the network edge here: the name resolves where an attacker points it.
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "innocent.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    problem = service_url_problem("https://innocent.example.com", production=True)
    assert problem == (
        "innocent.example.com resolves to 169.254.169.254 is a link-local or "
        "instance-metadata address"
    )
    with pytest.raises(ValidationError):
        validate_service_url("https://innocent.example.com")


def test_the_admin_form_refuses_bad_environments(personas: Any, settings: Any) -> None:
    client = Client()
    client.force_login(personas["superuser"])
    bad = {
        "model_name": "iris",
        "name": "x');alert(1);//",
        "ssm_parameter": "/aws/models/iris",
        "service_arn": "arn:aws:ecs:us-east-1:1:service/x",
        "service_url": "http://169.254.169.254/latest",
        "target": "apprunner",
        "position": 0,
    }
    response = client.post("/admin/deployments/environment/add/", bad)
    assert response.status_code == 200
    html = response.content.decode()
    assert "invalid environment name" in html
    assert "reserved by AWS" in html
    assert "App Runner service ARN" in html
    assert "instance-metadata" in html
    assert not Environment.objects.exists()
    good = {
        **bad,
        "name": "production",
        "ssm_parameter": "/models/iris/production",
        "service_arn": ARN,
        "service_url": "http://127.0.0.1:8080",
    }
    assert client.post("/admin/deployments/environment/add/", good).status_code == 302
    assert Environment.objects.get().name == "production"
    # in production mode the same URL is refused: https only, no loopback
    settings.PRODUCTION = True
    edit = client.post(
        f"/admin/deployments/environment/{Environment.objects.get().pk}/change/", good
    )
    assert edit.status_code == 200 and "must use https" in edit.content.decode()


class _Service(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        prefix = self.path.split("/")[1]
        status, headers, body = self.answers[prefix]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the dashboard stopped reading: that is the point

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    big = json.dumps({"version": "1.0", "pad": "x" * (4 * MAX_VERSION_BYTES)}).encode()
    _Service.answers = {
        "ok": (200, {}, json.dumps({"version": "1.0", "sha256": "a" * 64}).encode()),
        "big": (200, {}, big),
        "junk": (200, {}, json.dumps({"version": "<img src=x onerror=alert(1)>"}).encode()),
        "moved": (302, {"Location": "http://169.254.169.254/latest"}, b""),
        "text": (200, {}, b"hello"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_live_check_reads_a_bounded_answer(service: str) -> None:
    ok = live_version(base_url=f"{service}/ok")
    assert (ok.version, ok.sha256, ok.error) == ("1.0", "a" * 64, "")
    big = live_version(base_url=f"{service}/big")
    assert big.version is None and f"more than {MAX_VERSION_BYTES} bytes" in big.error
    junk = live_version(base_url=f"{service}/junk")
    assert junk.version is None and "invalid version name" in junk.error
    moved = live_version(base_url=f"{service}/moved")
    assert moved.version is None and "answered 302" in moved.error  # not followed
    text = live_version(base_url=f"{service}/text")
    assert "did not answer JSON" in text.error


def test_live_check_refuses_a_metadata_url_without_connecting() -> None:
    answer = live_version(base_url="http://169.254.169.254/latest/meta-data")
    assert answer.version is None and answer.error.startswith("the service URL is refused")


def test_live_checks_load_the_ca_bundle_once_per_process(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page with 20 environments makes 20 live checks: each used to build a
    # fresh TLS context (loading the CA bundle, ~20 ms of CPU) for its client.
    live_version(base_url=f"{service}/ok")  # the process's first check builds it
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    for _ in range(3):
        assert live_version(base_url=f"{service}/ok").sha256 == "a" * 64
    assert loads == []
    # ... and https services are still verified as httpx does by default.
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
