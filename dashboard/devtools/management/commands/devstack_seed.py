"""Seed the local stack: bucket, demo model versions, pointers, users, environments.

Run by ``python -m devstack up`` in two phases: ``--phase aws`` before the App
Runner stand-in starts (its first instances read the pointers), and
``--phase services`` after, to link each environment to its service's ARN.
Idempotent: a warm start rewrites nothing that is already there.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dashboard.accounts.services import user_ensure
from dashboard.aws import apprunner, ssm
from dashboard.deployments.models import Environment
from dashboard.deployments.pointer import pointer_build, pointer_dumps, pointer_loads
from dashboard.deployments.services import environment_ensure, environments_refresh_pointers
from dashboard.envconfig import env_str
from dashboard.registry.selectors import version_get
from dashboard.registry.services import registry_sync, version_publish

# environment -> index into the demo versions (oldest first) it starts on;
# the newest, best version is left for the user to promote.
ENVIRONMENTS = {"staging": 1, "production": 0}


def service_name(model: str, environment: str) -> str:
    return f"{model}-{environment}"


class Command(BaseCommand):
    help = "Seed the embedded AWS and the database for the local stack."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--phase", choices=["aws", "services"], required=True)
        parser.add_argument(
            "--migrate", action="store_true", help="apply migrations first (saves a start-up)"
        )
        parser.add_argument("--cors-origin", action="append", default=[])
        parser.add_argument(
            "--service-url",
            action="append",
            default=[],
            help="ENV=URL: the stable local URL of an environment's service",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["migrate"]:
            call_command("migrate", interactive=False, verbosity=1)
        if options["phase"] == "aws":
            self._seed_aws(options["cors_origin"])
        else:
            urls = dict(item.split("=", 1) for item in options["service_url"])
            self._link_services(urls)

    def _seed_aws(self, cors_origins: list[str]) -> None:
        from devstack.demo_model import MODEL_NAME, build_demo_versions
        from devstack.embedded_aws import bootstrap

        endpoint = settings_endpoint()
        bootstrap(
            endpoint_url=endpoint,
            region=settings.AWS_REGION,
            bucket=settings.MODELS_BUCKET,
            cors_origins=cors_origins or ["http://127.0.0.1:8000", "http://localhost:8000"],
        )
        versions = build_demo_versions(settings.STATE_DIR / "demo-model")
        # The embedded AWS starts empty: drop index rows of objects it no longer has.
        registry_sync()
        for demo in versions:
            if version_get(model=MODEL_NAME, version=demo.version) is None:
                version_publish(
                    model=MODEL_NAME,
                    version=demo.version,
                    path=Path(demo.path),
                    artifact=demo.artifact,
                    format=demo.format,
                    input_shape=list(demo.input_shape),
                    input_dtype=demo.input_dtype,
                    created_by="demo-trainer",
                    notes=demo.notes,
                    metrics=dict(demo.metrics),
                )
                self.stdout.write(f"published {MODEL_NAME} {demo.version} ({demo.format})")
        for name, index in ENVIRONMENTS.items():
            parameter = f"/models/{MODEL_NAME}/{name}"
            current = pointer_loads(ssm.get_parameter(name=parameter))
            info = None
            if current is not None:
                info = version_get(model=MODEL_NAME, version=current["version"])
            if (
                info is None
                or current is None
                or info.s3_version_id != current.get("s3_version_id")
            ):
                info = version_get(model=MODEL_NAME, version=versions[index].version)
                assert info is not None
                pointer = pointer_build(
                    info=info,
                    bucket=settings.MODELS_BUCKET,
                    promoted_by="seed",
                    reason="initial version of the local stack",
                    now=timezone.now(),
                )
                ssm.put_parameter(name=parameter, value=pointer_dumps(pointer))
                # A new embedded AWS (its saved state was deleted): the
                # environment starts over from this pointer.
                Environment.objects.filter(ssm_parameter=parameter).update(
                    pointer_version_seen=None, promoted_version=""
                )
                self.stdout.write(f"pointer {parameter} -> {info.version}")
        environments_refresh_pointers()
        self._ensure_users()

    def _ensure_users(self) -> None:
        path = settings.STATE_DIR / "credentials.txt"
        if path.exists():
            path.chmod(0o600)  # tighten one an older version left readable
            password = path.read_text().split()[-1]
        else:
            password = secrets.token_urlsafe(12)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            write_private(path, f"users admin, deployer, viewer; password {password}\n")
        for username in ("admin", "deployer", "viewer"):
            user_ensure(username=username, password=password, role=username)
        self.stdout.write(f"users admin, deployer, viewer; password {password}")

    def _link_services(self, urls: dict[str, str]) -> None:
        from devstack.apprunner.service import ecs_service_arn_for
        from devstack.demo_model import MODEL_NAME

        # The stand-in's services are also ECS Express services (its ECS view,
        # devstack/apprunner/ecs_api.py): MODELDECK_DEVSTACK_TARGET=ecs_express
        # links the environments through that instead.
        target = env_str("MODELDECK_DEVSTACK_TARGET", Environment.Target.APPRUNNER)
        if target not in {Environment.Target.APPRUNNER, Environment.Target.ECS_EXPRESS}:
            raise CommandError(
                f"MODELDECK_DEVSTACK_TARGET={target!r}: the local stack runs "
                f"{Environment.Target.APPRUNNER} or {Environment.Target.ECS_EXPRESS}"
            )
        services = {s.name: s for s in apprunner.list_services()}
        for position, name in enumerate(["staging", "production"]):
            service = services.get(service_name(MODEL_NAME, name))
            if service is None:
                raise CommandError(f"the App Runner stand-in has no service {MODEL_NAME}-{name}")
            arn = service.arn
            if target == Environment.Target.ECS_EXPRESS:
                _, _, _, region, account, _ = service.arn.split(":", 5)
                arn = ecs_service_arn_for(region=region, account_id=account, name=service.name)
            environment_ensure(
                model=MODEL_NAME,
                name=name,
                ssm_parameter=f"/models/{MODEL_NAME}/{name}",
                service_arn=arn,
                service_url=urls.get(name, f"http://{service.url}"),
                target=target,
                position=position,
            )
            self.stdout.write(f"environment {MODEL_NAME}/{name} -> {arn}")
        environments_refresh_pointers()


def settings_endpoint() -> str:
    import os

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise CommandError("devstack_seed only seeds the embedded AWS: set AWS_ENDPOINT_URL")
    return endpoint


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others,
    not even for a moment between writing and a chmod)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
