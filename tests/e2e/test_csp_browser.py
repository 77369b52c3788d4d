"""Every page of the local stack in Chromium under the strict
Content-Security-Policy: the header is there, nothing is refused, nothing is
logged as an error, and what the pages do with JavaScript (htmx polling and
filters, confirmations, the browser upload with its WebAssembly hashing and
PUTs to S3, the admin's widgets) still works."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


# Runs before any page script (Playwright injects it outside the page's CSP):
# every violation the browser reports is kept for the test to read.
VIOLATION_RECORDER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} refused ${e.blockedURI || "inline"}` +
    ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@dataclass
class Watch:
    """What went wrong in the browser, per page visited."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.violations


@pytest.fixture
def browser(local_stack: LocalStack, chromium: Any) -> Iterator[tuple[Any, Watch]]:
    watch = Watch()
    context = chromium.new_context()
    context.set_default_timeout(30_000)
    context.add_init_script(VIOLATION_RECORDER)
    page = context.new_page()
    page.on(
        "console",
        lambda m: (
            watch.console_errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: watch.page_errors.append(f"{page.url}: {e}"))
    try:
        yield page, watch
    finally:
        page.screenshot(path=str(local_stack.state_dir / "csp-last.png"), full_page=True)
        context.close()


def visit(page: Any, watch: Watch, url: str) -> Any:
    """Open ``url``, check the response's policy, and collect what the page
    reported once it settled."""
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "default-src 'none'" in policy, (url, policy)
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (url, policy)
    page.wait_for_load_state("networkidle")
    collect(page, watch)
    watch.visited.append(url)
    return response


def collect(page: Any, watch: Watch) -> None:
    found = page.evaluate("window.__csp.splice(0)")
    watch.violations.extend(f"{page.url}: {v}" for v in found)


def sign_in(page: Any, watch: Watch, stack: LocalStack, user: str = "admin") -> None:
    visit(page, watch, f"{stack.dashboard}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", stack.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/")


def promote_staging(stack: LocalStack) -> int:
    """A deployment to look at (and a rollback target for the model page)."""
    headers = {"Authorization": f"Token {stack.api_token('deployer')}"}
    base = f"{stack.dashboard}/api/models/iris"
    staging = next(
        e
        for e in httpx.get(f"{base}/environments", headers=headers).json()
        if e["name"] == "staging"
    )
    versions = httpx.get(f"{base}/versions", params={"status": "valid"}, headers=headers).json()
    target = next(
        v["version"]
        for v in versions["items"]
        if v["format"] == "torchscript" and v["version"] != staging["promoted_version"]
    )
    response = httpx.post(
        f"{base}/environments/staging/promote",
        json={"version": target, "reason": "csp test"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_every_page_works_under_the_policy_without_a_console_error(
    local_stack: LocalStack, browser: tuple[Any, Watch], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page, watch = browser
    dashboard = local_stack.dashboard
    sign_in(page, watch, local_stack)
    deployment_id = promote_staging(local_stack)

    # The deployment page polls itself with htmx until the deployment ends.
    visit(page, watch, f"{dashboard}/deployments/{deployment_id}/")
    page.wait_for_selector(
        "#deployment-status[data-status=succeeded], #deployment-status[data-status=failed],"
        " #deployment-status[data-status=rolled_back]",
        timeout=180_000,
    )
    collect(page, watch)

    visit(page, watch, f"{dashboard}/models/")
    visit(page, watch, f"{dashboard}/models/iris/")
    # htmx filters: typing in the search box swaps the versions table
    page.locator("input[name=q]").press_sequentially("2026.11.1")
    # (Playwright's expect runs in its own world: wait_for_function would eval
    # in the page, which the policy rightly refuses.)
    expect(page.locator("#versions tbody tr[data-version]")).to_have_count(1)
    # a confirmation comes from data-confirm (static JS), not an inline handler;
    # dismissing it sends nothing
    rollback = page.locator("section[data-environment=staging] form.rollback")
    assert rollback.count() == 1
    question = rollback.get_attribute("data-confirm")
    assert question and question.startswith("Roll staging back from ")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    rollback.locator("input[name=reason]").fill("csp test")
    rollback.locator("button").click()
    page.wait_for_timeout(500)
    assert asked == [question + "\n\nReason: csp test"]
    assert page.url == f"{dashboard}/models/iris/"
    collect(page, watch)

    visit(page, watch, f"{dashboard}/models/iris/versions/2026.11.3/")
    visit(page, watch, f"{dashboard}/upload/")

    # Settings: create a token, then revoke it through the confirmation.
    visit(page, watch, f"{dashboard}/settings/")
    page.fill("input[name=name]", "csp-test")
    page.click("form.card button[type=submit]")
    page.wait_for_selector("#new-token-key")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#tokens tr", has_text="csp-test").locator("button").click()
    page.wait_for_selector("text=Revoked csp-test.")
    collect(page, watch)

    # The browser upload: WebAssembly SHA-256 and PUTs straight to S3 are the
    # two things the policy widens for this page only. Random bytes will not
    # validate, so they go to a model of their own: the other tests of the
    # shared stack pick versions of iris.
    visit(page, watch, f"{dashboard}/models/csp-scratch/upload/")
    artifact = tmp_path / "random.pt"
    artifact.write_bytes(os.urandom(6 * 1024 * 1024))  # two 5 MiB parts
    page.fill("input[name=version]", f"csp-{int(time.time())}")
    page.fill("input[name=shape]", "4")
    page.set_input_files("input[name=file]", str(artifact))
    page.click("#upload-start")
    page.locator("#upload-done").wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-error").is_hidden()
    collect(page, watch)

    # The admin: Django's own templates and scripts under the same policy.
    visit(page, watch, f"{dashboard}/admin/")
    visit(page, watch, f"{dashboard}/admin/deployments/environment/")
    page.click("#result_list tbody tr a")
    page.wait_for_selector("#environment_form")
    collect(page, watch)
    visit(page, watch, f"{dashboard}/admin/auth/user/add/")
    visit(page, watch, f"{dashboard}/admin/axes/accessattempt/")
    visit(page, watch, f"{dashboard}/admin/registry/deletedversion/")

    # The API's docs (Swagger UI, from django-ninja's own static files).
    visit(page, watch, f"{dashboard}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    collect(page, watch)

    # Signed out: the sign-in page.
    visit(page, watch, f"{dashboard}/models/")
    page.click("text=Sign out")
    page.wait_for_url("**/login/")
    visit(page, watch, f"{dashboard}/login/")

    assert not watch.problems(), json.dumps(watch.problems(), indent=2)
    assert len(watch.visited) >= 15

    # The watch sees what it is there to see: an inline script and an inline
    # style slipped into the page are refused, reported and logged.
    page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.__ran = true";
          document.body.append(script);
          const styled = document.createElement("div");
          styled.setAttribute("style", "color: red");
          document.body.append(styled);
        }"""
    )
    page.wait_for_timeout(500)
    collect(page, watch)
    assert page.evaluate("() => window.__ran") is None
    assert any("script-src-elem refused inline" in v for v in watch.violations), watch.violations
    assert any("style-src-attr refused inline" in v for v in watch.violations), watch.violations
    assert any("Content Security Policy" in e for e in watch.console_errors), watch.console_errors


def test_the_state_folder_and_credentials_are_private(local_stack: LocalStack) -> None:
    assert stat.S_IMODE(local_stack.state_dir.stat().st_mode) == 0o700
    credentials = local_stack.state_dir / "credentials.txt"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
