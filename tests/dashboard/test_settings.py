"""Settings come from the environment and fail loudly when wrong."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "MODELDECK_ENV", "DEBUG"} and not k.startswith("SECURE_")
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", *args],
        env=clean,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_development_defaults_pass() -> None:
    result = run_check()
    assert result.returncode == 0, result.stderr


def test_production_refuses_the_development_secret_key() -> None:
    result = run_check(MODELDECK_ENV="production", ALLOWED_HOSTS="x")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "development default is refused" in result.stderr


def test_production_accepts_a_real_key_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(secrets.token_urlsafe(50) + "\n")
    result = run_check(MODELDECK_ENV="production", SECRET_KEY_FILE=str(key), ALLOWED_HOSTS="x")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEPLOYMENT_POLL_SECONDS": "fast"}, "DEPLOYMENT_POLL_SECONDS='fast' is not a number"),
        ({"AWS_MAX_ATTEMPTS": "0"}, "AWS_MAX_ATTEMPTS=0 must be at least 1"),
        ({"MODELDECK_ENV": "prod"}, "must be 'development' or 'production'"),
        ({"MODELS_BUCKET": "Bad_Bucket"}, "not a valid S3 bucket name"),
        ({"AWS_REGION": "mars"}, "not an AWS region name"),
        ({"SECRET_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], needle: str) -> None:
    result = run_check(**env)
    assert result.returncode != 0
    assert needle in result.stderr


def test_the_validation_sandbox_is_chosen_explicitly() -> None:
    unknown = run_check(VALIDATION_SANDBOX="off")
    assert unknown.returncode != 0
    assert "VALIDATION_SANDBOX='off' must be 'bwrap', 'container' or 'none-dev'" in unknown.stderr
    # No isolation at all is for development machines only.
    production = run_check(
        MODELDECK_ENV="production",
        SECRET_KEY="x7-Qk2!vR9#mZp4&Lw8*Nc3^Hb6(Jd1)Yt5" * 2,
        ALLOWED_HOSTS="x",
        VALIDATION_SANDBOX="none-dev",
    )  # fmt: skip
    assert production.returncode != 0
    assert "VALIDATION_SANDBOX=none-dev runs model files without any isolation" in production.stderr
    assert run_check(VALIDATION_SANDBOX="none-dev").returncode == 0


PRODUCTION = {
    "MODELDECK_ENV": "production",
    "ALLOWED_HOSTS": "deck.example.com",
    "DATABASE_URL": "postgres://modeldeck@db.internal:5432/modeldeck",
}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("modeldeck-development-secret-key-do-not-use-in-production", "development default"),
        ("compose-local-secret-key-change-me-0123456789abcdef", "published in this repository"),
        ("django-insecure-" + "a1b2c3d4e5f6g7h8i9j0" * 3, "placeholder"),
        ("please-change-me-" + secrets.token_urlsafe(40), "placeholder"),
        (secrets.token_urlsafe(24), "at least 50 are needed"),
        ("abcdef" * 12, "distinct characters"),
    ],
)
def test_production_refuses_known_short_and_weak_keys(key: str, reason: str) -> None:
    result = run_check(SECRET_KEY=key, **PRODUCTION)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and reason in result.stderr, result.stderr[-2000:]


def test_production_refuses_debug() -> None:
    result = run_check(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="true", **PRODUCTION)
    assert result.returncode != 0
    assert "DEBUG must be off when MODELDECK_ENV=production" in result.stderr


def test_the_old_trust_x_forwarded_for_setting_is_refused_with_its_replacement() -> None:
    result = run_check(TRUST_X_FORWARDED_FOR="true")
    assert result.returncode != 0
    assert "replaced by TRUSTED_PROXIES" in result.stderr


def test_bad_trusted_proxies_are_named() -> None:
    result = run_check(TRUSTED_PROXIES="10.0.0.0/8,proxy.internal")
    assert result.returncode != 0
    assert "'proxy.internal' is not an IP address or CIDR network" in result.stderr


def test_check_deploy_is_clean_in_production_mode() -> None:
    result = run_check(
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        TRUSTED_PROXIES="10.0.0.0/8",
        **PRODUCTION,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues (0 silenced)" in result.stdout


def test_check_deploy_warns_when_production_names_no_proxy() -> None:
    result = run_check(
        "--deploy", "--fail-level", "WARNING", SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION
    )
    assert result.returncode != 0
    assert "modeldeck.W010" in result.stderr and "TRUSTED_PROXIES is empty" in result.stderr


# Drives the production settings through Django's test client in a fresh
# process (the settings are read once per process).
_PRODUCTION_PROBE = """
import json, django
django.setup()
from django.test import Client
def probe(path, peer, **headers):
    r = Client(REMOTE_ADDR=peer).get(path, **headers)
    return {"status": r.status_code, "location": r.get("Location", ""),
            "hsts": r.get("Strict-Transport-Security", ""),
            "csp": r.get("Content-Security-Policy", "")}
print(json.dumps({
    "health": probe("/healthz", "203.0.113.9"),
    "plain": probe("/login/", "203.0.113.9"),
    "forged": probe("/login/", "203.0.113.9", HTTP_X_FORWARDED_PROTO="https"),
    "proxied": probe("/api/models", "10.0.0.5", HTTP_X_FORWARDED_PROTO="https",
                     HTTP_X_FORWARDED_FOR="203.0.113.9"),
}))
"""


def test_production_redirects_to_https_and_believes_only_the_named_proxy(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL"} and not k.startswith("SECURE_")
    }
    env.update(
        MODELDECK_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="testserver",
        TRUSTED_PROXIES="10.0.0.0/8",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="dashboard.settings",
    )
    result = subprocess.run(
        [sys.executable, "-c", _PRODUCTION_PROBE],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    # the platform's health check over plain HTTP is not redirected
    assert answers["health"]["status"] == 200
    # plain HTTP is sent to HTTPS, also when a direct client claims HTTPS
    for name in ("plain", "forged"):
        assert answers[name]["status"] == 301, name
        assert answers[name]["location"] == "https://testserver/login/", name
    # through the named proxy the request is HTTPS: served (the API asks for
    # credentials), with HSTS and CSP
    proxied = answers["proxied"]
    assert proxied["status"] == 401
    assert proxied["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert "script-src 'self'" in proxied["csp"]
