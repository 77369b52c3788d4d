"""Webhooks and the audit page in a real chromium against the local stack: an
admin adds a webhook (the secret shows once), presses "Send test", watches
the stack's own worker deliver it in the live delivery log, then finds the
change in the audit history and downloads the deployments CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dashboard.webhook_receiver import receiver
from tests.e2e.conftest import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def page(local_stack: LocalStack, chromium: Any) -> Iterator[Any]:

    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    try:
        yield page
    finally:
        page.screenshot(path=str(local_stack.state_dir / "browser-webhooks.png"), full_page=True)
        context.close()


def sign_in(page: Any, stack: LocalStack, username: str) -> None:
    page.goto(f"{stack.dashboard}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", stack.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/")


def test_add_a_webhook_send_a_test_and_find_it_in_the_history(
    local_stack: LocalStack, page: Any
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, local_stack, "admin")
    hooks = f"{local_stack.dashboard}/models/iris/environments/staging/webhooks/"
    with receiver(500, 200) as rec:
        page.goto(hooks)
        form = page.locator("#webhook-new")
        form.locator("input[name=url]").fill(rec.url)
        form.locator("input[value='drift.detected']").uncheck()
        form.locator("button[type=submit]").click()
        secret = page.locator("#new-secret-value").inner_text().strip()
        assert secret.startswith("whsec_")

        page.goto(hooks)  # shown once: a fresh view of the page does not have it
        assert secret not in page.content()
        card = page.locator("section.webhook").filter(has_text=rec.url)
        assert card.locator("input[value='drift.detected']").is_checked() is False

        with page.expect_navigation():
            card.locator("button.send-test").click()
        # The receiver answers 500 first: the log shows that attempt live
        # (htmx polling), and the retry is scheduled about 30 s later.
        page.wait_for_selector(".delivery .attempt[data-status='500']", timeout=60_000)
        [first] = rec.wait_for(1)
        assert first.json["event"] == "ping"
        assert first.signature_valid(secret)
        assert page.locator(".delivery[data-state=pending]").count() >= 1
    assert errors == []

    page.click("nav >> text=Audit")
    page.wait_for_url("**/audit/")
    page.select_option("select[name=action]", "webhook_create")
    page.click("#audit-filters button[type=submit]")
    page.wait_for_url("**/audit/?*action=webhook_create*")
    row = page.locator("#audit tbody tr").first
    assert "admin" in row.inner_text() and rec.url in row.inner_text()

    with page.expect_download() as download_info:
        page.click("#deployments-csv")
    path = download_info.value.path()
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    headers = {"Authorization": f"Token {local_stack.api_token('viewer')}"}
    total = httpx.get(f"{local_stack.dashboard}/api/deployments", headers=headers).json()["total"]
    assert len(rows) == total
    if rows:
        assert {"id", "model", "environment", "status", "to_version"} <= rows[0].keys()
    assert errors == []
