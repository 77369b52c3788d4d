"""In real Chromium on the local stack: an admin requires approval, a deployer
promotes with a confirmation and a reason, a second person approves, the
deployment page follows every status live; then a rollback, and the drift
banner after a hand edit of the pointer in SSM."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ENV = "production"


class Person:
    """One signed-in browser context, with the console errors it saw."""

    def __init__(self, browser: Any, stack: LocalStack, username: str) -> None:
        self.stack = stack
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.prompts: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("dialog", self._answer)
        self.page.goto(f"{stack.dashboard}/login/")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", stack.password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/models/")

    def _answer(self, dialog: Any) -> None:
        self.prompts.append(dialog.message)
        dialog.accept()

    def open(self, path: str) -> Any:
        self.page.goto(f"{self.stack.dashboard}{path}")
        return self.page

    def set_rules(self, **rules: Any) -> None:
        page = self.open(f"/models/iris/environments/{ENV}/settings/")
        for name, value in rules.items():
            field = page.locator(f"[name={name}]")
            if isinstance(value, bool):
                field.set_checked(value)
            else:
                field.fill(str(value))
        page.click("form.rules button[type=submit]")
        page.wait_for_url(f"**/environments/{ENV}/")


def final_status(page: Any, timeout: float = 240) -> tuple[str, list[str]]:
    """Watch the live panel (htmx polling, no reload) until it is final; return
    the final status and every status it showed on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = page.locator("#deployment-status").get_attribute("data-status")
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status in {"succeeded", "failed", "rolled_back", "rejected", "expired"}:
            return status, seen
        time.sleep(0.1)
    raise AssertionError(
        f"still {seen} after {timeout} s: {page.locator('#deployment-panel').inner_text()}"
    )


def test_approval_live_progress_rollback_and_drift(local_stack: LocalStack, chromium: Any) -> None:
    admin = Person(chromium, local_stack, "admin")
    deployer = Person(chromium, local_stack, "deployer")
    admin.set_rules(requires_approval=True)
    try:
        page = deployer.open("/models/iris/")
        card = page.locator(f"section[data-environment={ENV}]")
        live_before = card.locator("dd.live").get_attribute("data-version")
        options = card.locator("form.promote select[name=version] option").all_inner_texts()
        target = next(v for v in options if v != live_before)
        card.locator("form.promote select[name=version]").select_option(target)
        card.locator("form.promote input[name=reason]").fill("better accuracy")
        card.locator("form.promote button.primary").click()
        page.wait_for_url("**/deployments/*/")
        assert deployer.prompts and ENV in deployer.prompts[-1]
        assert "better accuracy" in deployer.prompts[-1]  # the confirmation shows the reason
        assert page.locator("#deployment-status").get_attribute("data-status") == (
            "awaiting_approval"
        )
        assert page.locator("[data-stage=awaiting_approval].stage-current").count() == 1
        assert page.locator("form[action$=approve]").count() == 0  # never one's own
        deployment_url = page.url

        approver = admin.open(deployment_url.removeprefix(local_stack.dashboard))
        approver.locator("form[action$=approve] input[name=reason]").fill("looks good")
        approver.locator("form[action$=approve] button").click()
        status, seen = final_status(approver)
        assert status == "succeeded", (seen, approver.locator("#deployment-panel").inner_text())
        assert "in_progress" in seen  # the panel moved on its own
        panel = approver.locator("#deployment-panel").inner_text()
        assert "admin approved it: looks good" in panel and "verified" in panel
        assert approver.locator("[data-stage=succeeded].stage-done").count() == 1
    finally:
        admin.set_rules(requires_approval=False)

    # Roll back from the environment page: from -> to with SHA-256s, a reason.
    page = deployer.open(f"/models/iris/environments/{ENV}/")
    rollback = page.locator("form.rollback")
    assert target in rollback.inner_text() and live_before in rollback.inner_text()
    rollback.locator("input[name=reason]").fill("back to the previous one")
    rollback.locator("button").click()
    page.wait_for_url("**/deployments/*/")
    status, _ = final_status(page)
    assert status == "succeeded", page.locator("#deployment-panel").inner_text()
    assert "Rollback" in page.locator("#deployment-panel").inner_text()

    # Someone edits the pointer by hand: the environment shows drift with its fix.
    ssm = boto3.client(
        "ssm",
        endpoint_url=local_stack.aws,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    parameter = f"/models/iris/{ENV}"
    pointer = json.loads(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    ssm.put_parameter(
        Name=parameter,
        Value=json.dumps(dict(pointer, version=target, promoted_by="console")),
        Type="String",
        Overwrite=True,
    )
    deadline = time.monotonic() + 60  # the live checks are cached for 10 s
    while True:
        page = deployer.open(f"/models/iris/environments/{ENV}/")
        if page.locator("[data-drift]").count():
            break
        assert time.monotonic() < deadline, "no drift banner"
        time.sleep(2)
    assert "outside the dashboard" in page.locator("[data-drift]").inner_text()
    page.locator("#drift form[action$=restore-pointer] button").click()
    page.wait_for_url(f"**/environments/{ENV}/")
    assert page.locator("[data-drift]").count() == 0
    restored = json.loads(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    assert restored["version"] == live_before
    assert admin.errors == [] and deployer.errors == []
