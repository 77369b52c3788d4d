"""In a real browser (Debian's chromium driven by Playwright): sign in,
promote a version from the model page, watch the deployment succeed live."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def page(local_stack: LocalStack, chromium: Any) -> Iterator[Any]:

    context = chromium.new_context()
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" prompts
    try:
        yield page
    finally:
        page.screenshot(path=str(local_stack.state_dir / "browser-last.png"), full_page=True)
        context.close()


def test_sign_in_promote_and_watch_it_succeed(local_stack: LocalStack, page: Any) -> None:
    page.goto(f"{local_stack.dashboard}/models/")
    assert "/login/" in page.url
    page.fill("input[name=username]", "deployer")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.locator("text=didn't match").is_visible()
    page.fill("input[name=username]", "deployer")
    page.fill("input[name=password]", local_stack.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/")
    page.click("text=iris")
    page.wait_for_url("**/models/iris/")

    production = page.locator("section[data-environment=production]")
    live_before = production.locator("dd.live").get_attribute("data-version")
    options = production.locator("form.promote select[name=version] option").all_inner_texts()
    target = next(v for v in reversed(options) if v != live_before)
    production.locator("form.promote select[name=version]").select_option(target)
    production.locator("form.promote input[name=reason]").fill("browser test")
    production.locator("form.promote button.primary").click()

    page.wait_for_url("**/deployments/*/")
    status = page.locator("#deployment-status")
    # htmx polls the panel; the badge turns final without a reload.
    page.wait_for_selector(
        "#deployment-status[data-status=succeeded], #deployment-status[data-status=failed], "
        "#deployment-status[data-status=rolled_back]",
        timeout=180_000,
    )
    assert status.get_attribute("data-status") == "succeeded", page.locator(
        "#deployment-panel"
    ).inner_text()
    assert target in page.locator("#deployment-panel").inner_text()
    assert httpx.get(f"{local_stack.production}/version").json()["version"] == target

    page.goto(f"{local_stack.dashboard}/models/iris/")
    live = page.locator("section[data-environment=production] dd.live")
    assert live.get_attribute("data-version") == target
