"""In a real browser on the local stack: traffic goes through App Runner's stable
URL, a deployment goes live, and the metrics page draws its charts (with the
deployment's marker) from the embedded CloudWatch while the logs page lists
the request lines. With MODELDECK_SCREENSHOTS=1 the screenshots go to
docs/img/, which the README shows."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The README's screenshots are refreshed only when asked (MODELDECK_SCREENSHOTS=1),
# so a test run leaves the working tree as it found it.
IMAGES = (
    Path(__file__).resolve().parents[2] / "docs" / "img"
    if os.environ.get("MODELDECK_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "modeldeck-screenshots"
)


def traffic(url: str, stop: threading.Event) -> None:
    """Steady requests, one in twenty with a wrong shape (a 422)."""
    with httpx.Client(timeout=10) as client:
        count = 0
        while not stop.is_set():
            count += 1
            body = (
                {"inputs": [[1.0, 2.0]]}
                if count % 20 == 0
                else {"inputs": [[5.1, 3.5, 1.4, 0.2]] * (1 + count % 3)}
            )
            client.post(f"{url}/predict", json=body)
            time.sleep(0.05)


def promote_staging(stack: LocalStack) -> int:
    headers = {"Authorization": f"Token {stack.api_token('deployer')}"}
    api = f"{stack.dashboard}/api/models/iris"
    environments = httpx.get(f"{api}/environments", headers=headers).json()
    live = next(e for e in environments if e["name"] == "staging")["live_version"]
    versions = httpx.get(f"{api}/versions?status=valid", headers=headers).json()["items"]
    target = next(v["version"] for v in versions if v["version"] != live)
    response = httpx.post(
        f"{api}/environments/staging/promote",
        headers=headers,
        json={"version": target, "reason": "monitoring browser test"},
    )
    assert response.status_code == 202, response.text
    deployment = response.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{stack.dashboard}/api/deployments/{deployment}", headers=headers
        ).json()["status"]
        if status == "succeeded":
            return int(deployment)
        assert status in {"pending", "in_progress", "verifying", "baking"}, status
        time.sleep(0.5)
    raise AssertionError(f"deployment {deployment} did not succeed")


@pytest.fixture
def page(local_stack: LocalStack, chromium: Any) -> Iterator[Any]:

    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="UTC")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{local_stack.dashboard}/login/")
    page.fill("input[name=username]", "viewer")
    page.fill("input[name=password]", local_stack.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/")
    try:
        yield page
        assert errors == [], errors
    finally:
        context.close()


def test_charts_with_a_deployment_marker_and_request_lines(
    local_stack: LocalStack, page: Any
) -> None:
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(local_stack.staging, stop), daemon=True)
    sender.start()
    try:
        time.sleep(8)
        deployment = promote_staging(local_stack)
        time.sleep(8)

        metrics = f"{local_stack.dashboard}/models/iris/environments/staging/metrics/?range=1h"
        requests_chart = page.locator("section.chart[data-chart=requests]")
        deadline = time.monotonic() + 90
        while True:
            page.goto(metrics)
            page.wait_for_selector(
                "section.chart[data-chart=requests][data-painted]", timeout=30_000
            )
            if (
                requests_chart.get_attribute("data-empty") == "0"
                and requests_chart.locator(f".marker-label[data-deployment='{deployment}']").count()
            ):
                break
            assert time.monotonic() < deadline, "the charts never showed the traffic and the marker"
            time.sleep(5)
        # Every chart is drawn (a canvas each), the latency one from the
        # stand-in's pre-computed percentiles. They are drawn one after the
        # other, so wait for the last before counting.
        page.wait_for_function(
            "document.querySelectorAll('section.chart canvas').length >="
            " document.querySelectorAll('section.chart').length",
            timeout=30_000,
        )
        assert (
            page.locator("section.chart canvas").count()
            == page.locator("section.chart").count()
            >= 8
        )
        latency = page.locator("section.chart[data-chart=latency]")
        page.wait_for_function(
            "document.querySelector('section.chart[data-chart=latency]').dataset.empty === '0'",
            timeout=60_000,
        )
        assert latency.get_attribute("data-empty") == "0"
        marker = requests_chart.locator(f".marker-label[data-deployment='{deployment}']")
        assert marker.get_attribute("href") == f"/deployments/{deployment}/"
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.locator("main").screenshot(path=str(IMAGES / "metrics.png"))

        page.goto(f"{local_stack.dashboard}/models/iris/environments/staging/logs/")
        page.wait_for_selector("#log-rows tr.kind-request", timeout=30_000)
        first = page.locator("#log-rows tr.kind-request").first
        assert first.locator(".method").inner_text() == "POST"
        assert first.locator(".path").inner_text() == "/predict"
        # Live tail: new lines arrive at the top without a reload.
        page.wait_for_selector("#log-rows tr.new", timeout=30_000)
        page.screenshot(path=str(IMAGES / "logs.png"))
        page.click("#tail-toggle")
        assert page.locator("#tail-toggle").get_attribute("aria-pressed") == "false"

        page.goto(f"{local_stack.dashboard}/deployments/{deployment}/")
        page.wait_for_selector("#deployment-comparison", timeout=30_000)
        assert page.locator("#deployment-stream li").count() >= 2
        page.locator("main").screenshot(path=str(IMAGES / "deployment.png"))
    finally:
        stop.set()
        sender.join(timeout=15)
