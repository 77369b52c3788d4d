"""Content-Security-Policy: every page sends a strict one, and no template
needs it relaxed (no inline script, handler or style). That the pages work
under it in Chromium, without a console error, is tests/e2e/test_csp_browser.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.conftest import publish
from tests.dashboard.factories import make_environment

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "dashboard" / "templates").rglob("*.html"))

# What a strict policy forbids, as it would appear in a template.
INLINE = {
    "inline event handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE),
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE),
    "style attribute": re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE),
    "style element": re.compile(r"<style[\s>]", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "htmx inline code": re.compile(r"\shx-on[:-]|\bjs:|hx-vals=['\"]javascript", re.IGNORECASE),
}


def test_templates_are_found() -> None:
    assert len(TEMPLATES) >= 15


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_has_inline_code_or_style(template: Path) -> None:
    text = template.read_text()
    found = [name for name, pattern in INLINE.items() if pattern.search(text)]
    assert not found, f"{template.name}: {', '.join(found)}"


def test_the_scan_catches_what_it_looks_for() -> None:
    bad = (
        "<form onsubmit=\"return confirm('x')\"></form><script>alert(1)</script>"
        '<p style="color:red"></p><style>p{}</style><a href="javascript:x()"></a>'
        '<div hx-on:click="x()"></div>'
    )
    assert [name for name, pattern in INLINE.items() if pattern.search(bad)] == list(INLINE)
    good = '<script src="/static/js/app.js" defer></script><form data-confirm="x"></form>'
    assert not [name for name, pattern in INLINE.items() if pattern.search(good)]


def policy(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy", "")
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


STRICT = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "connect-src": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
}


@pytest.fixture
def pages(aws: str, personas: Any, tmp_path: Path) -> Client:
    publish("iris", "1.0", tmp_path)
    make_environment("iris", "staging")
    client = Client()
    client.force_login(personas["superuser"])
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/login/",
        "/models/",
        "/models/iris/",
        "/models/iris/versions/1.0/",
        "/settings/",
        "/upload/",
        "/admin/",
        "/admin/deployments/environment/",
        "/models/nope/",  # the 404 page
    ],
)
def test_every_page_sends_the_strict_policy(pages: Client, url: str) -> None:
    response = pages.get(url)
    assert response.status_code in {200, 404}
    directives = policy(response)
    for name, sources in STRICT.items():
        assert directives.get(name) == sources, (url, name, directives.get(name))
    header = response["Content-Security-Policy"]
    assert "'unsafe-inline'" not in header and "'unsafe-eval'" not in header


def test_the_upload_page_adds_only_the_bucket_and_webassembly(pages: Client, aws: str) -> None:
    directives = policy(pages.get("/models/iris/upload/"))
    assert directives["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    # the presigned part URLs point at the bucket's origin (here: the embedded AWS)
    assert directives["connect-src"] == ["'self'", aws]
    assert directives["style-src"] == ["'self'"]


def test_the_hash_worker_script_may_compile_webassembly_and_nothing_else_widens(
    pages: Client,
) -> None:
    # A dedicated worker runs under its own script's policy, not the page's:
    # without 'wasm-unsafe-eval' there, hash-wasm cannot start (files hashed
    # chunk by chunk; tests/e2e/test_upload_browser.py drives it).
    from django.templatetags.static import static

    worker = pages.get(static("js/upload-hash.js"))
    assert worker.status_code == 200
    assert policy(worker)["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    other = pages.get(static("js/upload.js"))
    assert other.status_code == 200
    assert policy(other)["script-src"] == ["'self'"]
