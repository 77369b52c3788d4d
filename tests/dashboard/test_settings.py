"""Settings come from the environment and fail loudly when wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "MODELDECK_ENV", "DEBUG"}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
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
    key.write_text("k" * 50 + "\n")
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
        MODELDECK_ENV="production", SECRET_KEY="k" * 50, ALLOWED_HOSTS="x",
        VALIDATION_SANDBOX="none-dev",
    )  # fmt: skip
    assert production.returncode != 0
    assert "VALIDATION_SANDBOX=none-dev runs model files without any isolation" in production.stderr
    assert run_check(VALIDATION_SANDBOX="none-dev").returncode == 0
