"""Publish a local model file as a new version (for local use and scripts;
CI pipelines can also use the HTTP upload API, see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.aws.errors import AwsError
from dashboard.registry.manifest import DTYPES, FORMATS, ManifestError, format_for_filename
from dashboard.registry.services import VersionExists, version_publish


def _shape(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise CommandError(
            f"--shape {raw!r}: use comma-separated integers, e.g. 3,224,224"
        ) from exc


def _metric(raw: str) -> tuple[str, float]:
    name, sep, value = raw.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError as exc:
        raise CommandError(f"--metric {raw!r}: use name=number, e.g. accuracy=0.97") from exc


class Command(BaseCommand):
    help = "Upload FILE as version VERSION of MODEL (writes manifest.json, queues validation)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version")
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--shape", required=True, help="one example's shape, e.g. 4 or 3,224,224"
        )
        parser.add_argument("--dtype", default="float32", choices=DTYPES)
        parser.add_argument("--format", choices=FORMATS, help="default: from the file name")
        parser.add_argument("--notes", default="")
        parser.add_argument("--metric", action="append", default=[], help="name=number")
        parser.add_argument("--user", default="upload_model", help="recorded as created_by")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        try:
            row = version_publish(
                model=options["model"],
                version=options["version"],
                path=path,
                artifact=path.name,
                format=options["format"] or format_for_filename(path.name),
                input_shape=_shape(options["shape"]),
                input_dtype=options["dtype"],
                created_by=options["user"],
                notes=options["notes"],
                metrics=dict(_metric(m) for m in options["metric"]),
            )
        except (ValueError, ManifestError, VersionExists, AwsError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"uploaded {row.model_name} {row.version}: {row.size} bytes, sha256 {row.sha256}; "
            "validation queued"
        )
