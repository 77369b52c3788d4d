"""The browser upload (static/js/upload.js) in a real chromium against the
local stack: parallel presigned multipart PUTs straight to the embedded S3,
SHA-256 computed in the page, resume after a dropped connection and a closed
tab, refusals, cancel. The stack runs with 5 MiB parts, so the ~23 MB model
file built here goes up in 5 parts."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.conftest import LocalStack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

MODEL = "iris"
PART_BYTES = 5 * 1024 * 1024  # the stack's UPLOAD_PART_BYTES
PADDING_BYTES = 23 * 1000 * 1000


@dataclass(frozen=True)
class ModelFile:
    path: Path
    size: int
    sha256: str

    @property
    def part_count(self) -> int:
        return -(-self.size // PART_BYTES)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> ModelFile:
    """A real TorchScript model (input shape [4], float32) padded to ~23 MB
    with an unused buffer, so it loads and runs like any other."""
    import torch

    class Padded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            # Random, so no layer of the stack can shrink it by compressing.
            self.register_buffer("padding", torch.randn(PADDING_BYTES // 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    path = tmp_path_factory.mktemp("upload") / "padded.pt"
    torch.jit.save(torch.jit.script(Padded()), str(path))
    data = path.read_bytes()
    model = ModelFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert model.part_count == 5, model.size
    return model


@pytest.fixture(scope="module")
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    token = local_stack.api_token("deployer")
    with httpx.Client(
        base_url=f"{local_stack.dashboard}/api",
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def context(local_stack: LocalStack, chromium: Any) -> Iterator[Any]:
    """One browser profile: its pages share localStorage, as tabs do."""

    context = chromium.new_context()
    context.set_default_timeout(30_000)
    try:
        yield context
    finally:
        for page in context.pages:
            page.screenshot(path=str(local_stack.state_dir / "upload-last.png"), full_page=True)
        context.close()


# Records every value the progress bar and the stats line take, so the test
# sees the live progress, not only the final state.
PROGRESS_RECORDER = """
window.__progress = {bar: [], stats: []};
document.addEventListener("DOMContentLoaded", () => {
  const bar = document.getElementById("upload-bar");
  const stats = document.getElementById("upload-stats");
  if (!bar || !stats) return;
  new MutationObserver(() => window.__progress.bar.push(Number(bar.value)))
    .observe(bar, {attributes: true, attributeFilter: ["value"]});
  new MutationObserver(() => window.__progress.stats.push(stats.textContent))
    .observe(stats, {childList: true, characterData: true, subtree: true});
});
"""


def new_version() -> str:
    return f"e2e-{secrets.token_hex(4)}"


def sign_in(context: Any, stack: LocalStack) -> Any:
    page = context.new_page()
    page.goto(f"{stack.dashboard}/login/")
    page.fill("input[name=username]", "deployer")
    page.fill("input[name=password]", stack.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/models/**")
    return page


def open_upload_page(page: Any, stack: LocalStack) -> None:
    page.goto(f"{stack.dashboard}/models/{MODEL}/upload/")
    page.wait_for_selector("#upload-form")


def fill_form(page: Any, *, version: str, file: Path | None) -> None:
    page.fill("input[name=version]", version)
    page.fill("input[name=shape]", "4")
    page.select_option("select[name=dtype]", "float32")
    page.fill("textarea[name=notes]", "uploaded by the browser test")
    page.fill("input[name=metrics]", '{"accuracy": 0.5}')
    if file is not None:
        page.set_input_files("input[name=file]", str(file))


def is_part_put(request: Any, stack: LocalStack) -> bool:
    return request.method == "PUT" and request.url.startswith(stack.aws + "/")


def part_number(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["partNumber"][0])


def find_version(api: httpx.Client, version: str) -> dict[str, Any] | None:
    response = api.get(f"/models/{MODEL}/versions", params={"q": version})
    assert response.status_code == 200, response.text
    return next((v for v in response.json()["items"] if v["version"] == version), None)


def wait_valid(api: httpx.Client, version: str, timeout: float = 120) -> dict[str, Any]:
    """The version once the Celery worker has validated it (or failed to)."""
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = find_version(api, version)
        if found and found["status"] in {"valid", "invalid"}:
            return found
        time.sleep(1)
    raise AssertionError(f"{version} not validated in {timeout} s: {found}")


def stored_upload(page: Any, version: str) -> dict[str, Any] | None:
    return page.evaluate(
        "key => JSON.parse(localStorage.getItem(key) || 'null')",
        f"modeldeck.upload.{MODEL}.{version}",
    )


def test_a_small_file_is_described_by_its_own_size(
    local_stack: LocalStack, context: Any, tmp_path: Path
) -> None:
    """A 4 kB file is one part of up to 5 MiB: the page speaks of the file's
    4.1 kB, not of the part size, and does not round what it sent to 0.0 MB."""
    small = tmp_path / "small.pt"
    small.write_bytes(secrets.token_bytes(4096))
    page = sign_in(context, local_stack)
    open_upload_page(page, local_stack)
    fill_form(page, version=new_version(), file=small)
    page.click("#upload-start")
    page.locator("#upload-done").wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-note").inner_text() == "Uploading 4.1 kB in 1 part."
    assert re.fullmatch(
        r"4\.1 kB sent in \d+ s \([\d.]+ (MB|kB|B)/s on average\)\.",
        page.locator("#upload-stats").inner_text(),
    ), page.locator("#upload-stats").inner_text()


@pytest.mark.parametrize("hashing", ["native", "chunked"])
def test_upload_with_progress(
    local_stack: LocalStack, context: Any, api: httpx.Client, model_file: ModelFile, hashing: str
) -> None:
    page = sign_in(context, local_stack)
    page.add_init_script(PROGRESS_RECORDER)
    open_upload_page(page, local_stack)
    if hashing == "chunked":
        # The SHA-256 the other way: hash-wasm, chunk by chunk (as for files
        # over 512 MiB), instead of the browser's own digest of the whole file.
        page.evaluate("document.getElementById('upload-form').dataset.hashWholeFileBytes = '0'")
    puts: list[int] = []
    page.on(
        "request",
        lambda r: puts.append(part_number(r.url)) if is_part_put(r, local_stack) else None,
    )
    version = new_version()
    fill_form(page, version=version, file=model_file.path)
    page.click("#upload-start")

    done = page.locator("#upload-done")
    done.wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-error").is_hidden()
    assert "being validated" in done.inner_text()
    assert done.locator("a").get_attribute("href") == f"/models/{MODEL}/versions/{version}/"
    assert page.eval_on_selector("#upload-bar", "bar => bar.value") == 100
    progress = page.evaluate("window.__progress")
    assert progress["bar"] and progress["bar"] == sorted(progress["bar"]), progress["bar"]
    assert progress["bar"][-1] == 100
    total = f"{model_file.size / 1e6:.1f} MB"
    live = rf"^[\d.]+ MB of {re.escape(total)} · [\d.]+ (MB|kB|B)/s · .+ left"
    assert any(re.search(live, text) for text in progress["stats"]), progress["stats"]
    assert re.fullmatch(
        rf"{re.escape(total)} sent in \d+ s \([\d.]+ (MB|kB|B)/s on average\)\.",
        page.locator("#upload-stats").inner_text(),
    )
    assert sorted(puts) == list(range(1, model_file.part_count + 1))
    assert stored_upload(page, version) is None
    assert page.locator("#upload-note").inner_text() == (
        f"Uploading {total} in 5 parts of up to 5.2 MB, 6 at a time."
    )

    row = wait_valid(api, version)
    assert row["status"] == "valid", row
    assert row["sha256"] == model_file.sha256
    assert row["size"] == model_file.size
    assert row["input"] == {"shape": [4], "dtype": "float32"}
    assert row["metrics"] == {"accuracy": 0.5}

    done.locator("a").click()
    page.wait_for_url(f"**/models/{MODEL}/versions/{version}/")
    assert version in page.content()


def test_resume_after_a_dropped_connection_and_a_closed_tab(
    local_stack: LocalStack, context: Any, api: httpx.Client, model_file: ModelFile
) -> None:
    page = sign_in(context, local_stack)
    open_upload_page(page, local_stack)
    let_through: list[int] = []
    attempts: Counter[int] = Counter()

    def drop_after_two(route: Any) -> None:
        if route.request.method != "PUT":
            route.continue_()
            return
        number = part_number(route.request.url)
        attempts[number] += 1
        if len(let_through) < 2 and number not in let_through:
            let_through.append(number)
            route.continue_()
        else:
            route.abort("connectionreset")

    page.route(f"{local_stack.aws}/**", drop_after_two)
    version = new_version()
    fill_form(page, version=version, file=model_file.path)
    page.click("#upload-start")
    error = page.locator("#upload-error")
    error.wait_for(state="visible", timeout=60_000)
    assert "failed" in error.inner_text() and "resume" in error.inner_text(), error.inner_text()
    # Dropped parts were retried before giving up.
    assert max(attempts[n] for n in attempts if n not in let_through) > 1, attempts
    record = stored_upload(page, version)
    assert record is not None and record["version"] == version
    assert record["size"] == model_file.size and record["name"] == model_file.path.name

    upload = api.get(f"/models/{MODEL}/uploads/{record['upload_id']}")
    assert upload.status_code == 200, upload.text
    held = sorted(p["part_number"] for p in upload.json()["parts_done"])
    assert held == sorted(let_through)
    assert find_version(api, version)["status"] == "uploading"  # type: ignore[index]
    page.close()

    # A fresh tab of the same browser: it remembers the upload.
    page = context.new_page()
    open_upload_page(page, local_stack)
    hint = page.locator("#upload-resume-hint")
    assert version in hint.inner_text() and model_file.path.name in hint.inner_text()
    puts: list[int] = []
    page.on(
        "request",
        lambda r: puts.append(part_number(r.url)) if is_part_put(r, local_stack) else None,
    )
    fill_form(page, version=version, file=model_file.path)
    page.click("#upload-start")
    page.locator("#upload-done").wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-error").is_hidden()
    assert (
        f"Resuming: 2 of {model_file.part_count} parts already uploaded"
        in page.locator("#upload-note").inner_text()
    )
    missing = sorted(set(range(1, model_file.part_count + 1)) - set(held))
    assert sorted(puts) == missing
    assert stored_upload(page, version) is None

    row = wait_valid(api, version)
    assert row["status"] == "valid", row
    assert row["sha256"] == model_file.sha256
    assert row["size"] == model_file.size


def test_rejected_uploads_leave_nothing(
    local_stack: LocalStack, context: Any, api: httpx.Client, model_file: ModelFile
) -> None:
    page = sign_in(context, local_stack)
    open_upload_page(page, local_stack)
    calls: list[str] = []
    page.on(
        "request",
        lambda r: (
            calls.append(f"{r.method} {r.url}")
            if "/uploads" in r.url or r.url.startswith(local_stack.aws + "/")
            else None
        ),
    )
    error = page.locator("#upload-error")
    before = find_version(api, "2026.11.1")
    assert before is not None and before["status"] == "valid"

    # A version that exists: the server refuses, the page says why.
    fill_form(page, version="2026.11.1", file=model_file.path)
    page.click("#upload-start")
    error.wait_for(state="visible")
    assert "2026.11.1" in error.inner_text() and "already exists" in error.inner_text()
    assert calls == [f"POST {local_stack.dashboard}/api/models/{MODEL}/uploads"]
    assert find_version(api, "2026.11.1") == before
    assert stored_upload(page, "2026.11.1") is None
    assert page.locator("#upload-start").is_enabled()

    # A name that could escape its folder never reaches the API.
    calls.clear()
    total = api.get(f"/models/{MODEL}/versions").json()["total"]
    fill_form(page, version="../x", file=model_file.path)
    page.click("#upload-start")
    page.wait_for_function("!document.getElementById('upload-error').hidden")
    assert "Version must" in error.inner_text()
    assert calls == []
    assert api.get(f"/models/{MODEL}/versions").json()["total"] == total
    # The page's check only saves a round trip: the server refuses it too.
    refused = api.post(
        f"/models/{MODEL}/uploads",
        json={
            "version": "../x",
            "filename": "model.pt",
            "size": 10,
            "input": {"shape": [4], "dtype": "float32"},
        },
    )
    assert refused.status_code == 400 and "version" in refused.json()["detail"], refused.text

    # Other client-side checks: shape and metrics.
    fill_form(page, version=new_version(), file=model_file.path)
    page.fill("input[name=shape]", "4, 0")
    page.click("#upload-start")
    page.wait_for_function("document.getElementById('upload-error').textContent.includes('shape')")
    page.fill("input[name=shape]", "4")
    page.fill("input[name=metrics]", '{"accuracy": "high"}')
    page.click("#upload-start")
    page.wait_for_function(
        "document.getElementById('upload-error').textContent.includes('Metrics')"
    )
    assert calls == []
    assert api.get(f"/models/{MODEL}/versions").json()["total"] == total


def test_cancel_aborts_the_upload(
    local_stack: LocalStack, context: Any, api: httpx.Client, model_file: ModelFile
) -> None:
    page = sign_in(context, local_stack)
    open_upload_page(page, local_stack)
    held: list[Any] = []

    # Hold the part PUTs (never answered) so the upload is surely mid-way.
    def hold(route: Any) -> None:
        if route.request.method == "PUT":
            held.append(route)
        else:
            route.continue_()

    page.route(f"{local_stack.aws}/**", hold)
    version = new_version()
    fill_form(page, version=version, file=model_file.path)
    with page.expect_request(lambda r: is_part_put(r, local_stack)):
        page.click("#upload-start")
    record = stored_upload(page, version)
    assert record is not None
    assert find_version(api, version)["status"] == "uploading"  # type: ignore[index]

    page.click("#upload-cancel")
    done = page.locator("#upload-done")
    done.wait_for(state="visible")
    assert "cancelled" in done.inner_text()
    assert page.locator("#upload-error").is_hidden()
    assert page.locator("#upload-cancel").is_hidden()
    assert stored_upload(page, version) is None
    for route in held:
        try:
            route.abort()
        except Exception:  # noqa: BLE001 - the browser already dropped the request
            pass

    gone = api.get(f"/models/{MODEL}/uploads/{record['upload_id']}")
    assert gone.status_code in {404, 409}, gone.text
    if gone.status_code == 409:
        assert "aborted" in gone.json()["detail"]
    assert find_version(api, version) is None
    # The name is free again.
    again = api.post(
        f"/models/{MODEL}/uploads",
        json={
            "version": version,
            "filename": "model.pt",
            "size": 10,
            "input": {"shape": [4], "dtype": "float32"},
        },
    )
    assert again.status_code == 201, again.text
    assert api.delete(f"/models/{MODEL}/uploads/{again.json()['upload_id']}").status_code == 204


EXPIRED = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


def test_expired_part_url_is_renewed_and_retried(
    local_stack: LocalStack, context: Any, api: httpx.Client, model_file: ModelFile
) -> None:
    page = sign_in(context, local_stack)
    open_upload_page(page, local_stack)
    attempts: Counter[int] = Counter()
    urls: dict[int, list[str]] = {}
    refreshes: list[str] = []

    def expire_part_two_once(route: Any) -> None:
        request = route.request
        if request.method != "PUT":
            route.continue_()
            return
        number = part_number(request.url)
        attempts[number] += 1
        urls.setdefault(number, []).append(request.url)
        if number == 2 and attempts[number] == 1:
            # What S3 says for a presigned URL past its expiry; CORS headers
            # so the page sees the 403 rather than a network error.
            route.fulfill(
                status=403,
                headers={
                    "Access-Control-Allow-Origin": local_stack.dashboard,
                    "Content-Type": "application/xml",
                },
                body=EXPIRED,
            )
        else:
            route.continue_()

    page.route(f"{local_stack.aws}/**", expire_part_two_once)
    page.on(
        "request",
        lambda r: (
            refreshes.append(r.url)
            if r.method == "GET" and re.search(r"/api/models/iris/uploads/[^/]+$", r.url)
            else None
        ),
    )
    version = new_version()
    fill_form(page, version=version, file=model_file.path)
    page.click("#upload-start")
    page.locator("#upload-done").wait_for(state="visible", timeout=60_000)
    assert page.locator("#upload-error").is_hidden()
    assert attempts[2] == 2 and all(attempts[n] == 1 for n in attempts if n != 2), attempts
    assert len(refreshes) == 1
    # The retry used the freshly presigned URL.
    assert urls[2][0] != urls[2][1]
    row = find_version(api, version)
    assert row is not None and row["status"] in {"validating", "valid"}, row
    assert row["sha256"] == model_file.sha256
