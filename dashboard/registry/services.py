"""Writes to the model registry: publish, sync from S3, validate."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record
from dashboard.aws import s3
from dashboard.aws.errors import AwsAlreadyExistsError, AwsError
from dashboard.registry.manifest import (
    FORMATS,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    validate_artifact_name,
    validate_input_signature,
)
from dashboard.registry.models import DeletedVersion, ModelVersion
from dashboard.registry.names import validate_model_name, validate_version_name, version_prefix
from dashboard.registry.s3index import VersionInfo, describe, folder_fingerprint, scan

logger = logging.getLogger(__name__)


class VersionExists(ValueError):
    """The version already exists (or existed: names are never reused);
    versions are immutable."""


def version_name_retired(*, model: str, version: str) -> str | None:
    """Why ``version`` of ``model`` may not be used again (it was deleted),
    or None when it is free of a tombstone."""
    tomb = DeletedVersion.objects.filter(model_name=model, version=version).first()
    if tomb is None:
        return None
    return (
        f"version {version} of {model} was deleted on {tomb.deleted_at:%Y-%m-%d} and its name "
        "is never reused (a name must always mean the same bytes): pick a new version name"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def version_publish(
    *,
    model: str,
    version: str,
    path: Path,
    format: str,
    input_shape: list[int],
    input_dtype: str,
    created_by: str,
    notes: str = "",
    metrics: dict[str, float] | None = None,
    artifact: str | None = None,
) -> ModelVersion:
    """Upload a local artifact and its manifest as a new version and index it
    (status ``validating``; the validation task is queued on commit).

    Used by the local stack's seed and ``manage.py upload_model``; browsers
    upload straight to S3 instead. Either both objects land or neither does.
    """
    validate_model_name(model)
    validate_version_name(version)
    artifact = validate_artifact_name(artifact or path.name)
    if format not in FORMATS:
        raise ManifestError(f"format must be one of {', '.join(FORMATS)}")
    shape, dtype = validate_input_signature(input_shape, input_dtype)
    bucket = settings.MODELS_BUCKET
    base = version_prefix(model, version)
    retired = version_name_retired(model=model, version=version)
    if retired:
        raise VersionExists(retired)
    if ModelVersion.objects.filter(model_name=model, version=version).exists() or any(
        True for _ in s3.iter_objects(bucket=bucket, prefix=base)
    ):
        raise VersionExists(f"version {version} of {model} already exists")
    sha256 = file_sha256(path)
    manifest = Manifest(
        model=model,
        version=version,
        artifact=artifact,
        format=format,
        sha256=sha256,
        size=path.stat().st_size,
        input_shape=shape,
        input_dtype=dtype,
        created_at=dt.datetime.now(dt.UTC),
        created_by=created_by,
        notes=notes,
        metrics=metrics or {},
    )
    checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
    # Conditional writes: a folder that appeared since the check above (a
    # concurrent upload, another tool) is never overwritten.
    try:
        version_id = s3.put_file(
            bucket=bucket, key=base + artifact, path=path, sha256_b64=checksum, only_if_absent=True
        )
    except AwsAlreadyExistsError as exc:
        raise VersionExists(f"version {version} of {model} already exists in S3") from exc
    try:
        s3.put_json(
            bucket=bucket,
            key=base + MANIFEST_FILE,
            document=manifest.to_dict(),
            only_if_absent=True,
        )
    except AwsError as exc:
        s3.delete_object(bucket=bucket, key=base + artifact)
        if isinstance(exc, AwsAlreadyExistsError):
            raise VersionExists(f"version {version} of {model} already exists in S3") from exc
        raise
    info = VersionInfo(
        model=model,
        version=version,
        artifact=artifact,
        key=base + artifact,
        format=format,
        size=manifest.size,
        status=ModelVersion.Status.VALIDATING,
        sha256=sha256,
        s3_version_id=version_id or "",
        input_shape=shape,
        input_dtype=dtype,
        created_at=manifest.created_at,
        created_by=created_by,
        notes=notes,
        metrics=manifest.metrics,
        has_manifest=True,
        # What the sync will see, so it does not take the folder for a changed one.
        fingerprint=folder_fingerprint(model=model, version=version),
    )
    with transaction.atomic():
        row = _upsert(info)
        audit_record(
            actor=None,
            actor_name=created_by,
            action=AuditEvent.Action.VERSION_UPLOAD,
            model=model,
            version=version,
            detail={"sha256": sha256, "size": manifest.size, "via": "publish"},
        )
    return row


def _upsert(info: VersionInfo) -> ModelVersion:
    """Create or refresh the row for ``info``; queue validation when needed."""
    fields: dict[str, Any] = {
        "artifact": info.artifact,
        "key": info.key,
        "format": info.format,
        "size": info.size,
        "sha256": info.sha256,
        "s3_version_id": info.s3_version_id,
        "input_shape": info.input_shape,
        "input_dtype": info.input_dtype,
        "created_at": info.created_at or timezone.now(),
        "created_by": info.created_by,
        "notes": info.notes,
        "metrics": info.metrics,
        "has_manifest": info.has_manifest,
        "status": info.status,
        "status_detail": info.status_detail,
        "fingerprint": info.fingerprint,
        "validation": None,
        "validated_at": None,
    }
    row, _ = ModelVersion.objects.update_or_create(
        model_name=info.model, version=info.version, defaults=fields
    )
    if info.status == ModelVersion.Status.VALIDATING:
        _enqueue_validation(row.pk)
    elif not info.has_manifest and info.artifact:
        _enqueue_hash(row.pk)
    return row


def _enqueue_validation(version_id: int) -> None:
    from dashboard.registry.tasks import version_validate

    transaction.on_commit(lambda: _safe_delay(version_validate, version_id))


def _enqueue_hash(version_id: int) -> None:
    from dashboard.registry.tasks import version_hash

    transaction.on_commit(lambda: _safe_delay(version_hash, version_id))


def _safe_delay(task: Any, version_id: int) -> None:
    try:
        task.delay(version_id)
    except Exception:  # the broker is down: the next sync re-queues what is left
        logger.exception("could not queue %s for version %s", task.name, version_id)


@dataclass(frozen=True)
class SyncReport:
    created: int
    updated: int
    deleted: int
    unchanged: int


def registry_sync(*, model: str | None = None) -> SyncReport:
    """Make the index match S3: add new folders, refresh changed ones, drop
    deleted ones. Idempotent; safe to run concurrently with uploads (rows of
    uploads in progress are left alone)."""
    folders = scan(model=model)
    rows = (
        ModelVersion.objects.all()
        if model is None
        else ModelVersion.objects.filter(model_name=model)
    )
    existing = {
        (r.model_name, r.version): r
        for r in rows.only("id", "model_name", "version", "fingerprint", "status")
    }
    changed = [
        f
        for k, f in folders.items()
        if k not in existing or existing[k].fingerprint != f.fingerprint
    ]
    # Describing costs two S3 calls per folder: do it in parallel.
    with ThreadPoolExecutor(max_workers=16) as pool:
        described = list(pool.map(describe, changed))
    retired = {
        (m, v): at
        for m, v, at in DeletedVersion.objects.filter(
            model_name__in={i.model for i in described}
        ).values_list("model_name", "version", "deleted_at")
    }
    created = updated = 0
    for info in described:
        deleted_at = retired.get((info.model, info.version))
        if deleted_at is not None:
            # Someone re-created a deleted version's folder behind our back:
            # list it, but never let the old name stand for new bytes.
            info = dataclasses.replace(
                info,
                status=ModelVersion.Status.INVALID,
                status_detail=(
                    f"this version name was deleted on {deleted_at:%Y-%m-%d} and cannot be "
                    "reused: upload these files under a new version name"
                ),
            )
        with transaction.atomic():
            previous = existing.get((info.model, info.version))
            if previous is not None and previous.status == ModelVersion.Status.UPLOADING:
                continue  # the upload's completion indexes it
            _upsert(info)
            if previous is None:
                created += 1
            else:
                updated += 1
    gone = [
        r.pk
        for k, r in existing.items()
        if k not in folders and r.status != ModelVersion.Status.UPLOADING
    ]
    deleted = ModelVersion.objects.filter(pk__in=gone).delete()[0] if gone else 0
    return SyncReport(
        created=created,
        updated=updated,
        deleted=deleted,
        unchanged=len(folders) - len(changed),
    )


def version_validate(*, version_id: int) -> ModelVersion | None:
    """Validate a version in the sandbox, in this process, and record the result
    (:func:`validation_ticket_create`, the run, :func:`version_record_validation`).
    The queued path does the same three steps on two workers.

    Returns the row, or None if it no longer exists. Raises AwsTransientError
    when S3 could not be read (the task retries)."""
    from dashboard.registry.validation import run_ticket

    ticket = validation_ticket_create(version_id=version_id)
    if ticket is None:
        return ModelVersion.objects.filter(pk=version_id).first()
    result = run_ticket(ticket)
    return version_record_validation(ticket=ticket, result=result)


def version_validation_enqueue(*, version_id: int) -> None:
    """Hand the validation of a version to the ``validation`` queue, whose
    workers need neither AWS credentials nor the database (docs/security.md)."""
    from dashboard.registry.tasks import validation_run

    ticket = validation_ticket_create(version_id=version_id)
    if ticket is not None:
        validation_run.delay(ticket)


def validation_ticket_create(*, version_id: int) -> dict[str, Any] | None:
    """The plain-data description of a version's validation: a presigned GET
    of the pinned object version, what to expect of it, the limits, and a token
    that only this dashboard can make (so a result for the version can be
    recorded only by the run of this ticket). None when the version is not
    waiting for validation."""
    from dashboard.registry.validation import make_job

    row = ModelVersion.objects.filter(pk=version_id).first()
    if row is None or row.status != ModelVersion.Status.VALIDATING:
        return None
    job = make_job(
        bucket=settings.MODELS_BUCKET,
        key=row.key,
        s3_version_id=row.s3_version_id or None,
        expected_sha256=row.sha256 or None,
        expected_size=row.size,
        format=row.format,
        input_shape=list(row.input_shape or []),
        input_dtype=row.input_dtype,
        time_limit_seconds=settings.VALIDATION_TIME_LIMIT_SECONDS,
        memory_limit_mb=settings.VALIDATION_MEMORY_LIMIT_MB,
        url_expires_seconds=int(settings.VALIDATION_TIME_LIMIT_SECONDS) + 6 * 3600,
    )
    return {
        "version_id": row.pk,
        "fingerprint": row.fingerprint,
        "token": _ticket_token(row.pk, row.fingerprint),
        "job": job.to_dict(),
    }


def _ticket_token(version_id: int, fingerprint: str) -> str:
    return salted_hmac(
        "modeldeck.registry.validation", f"{version_id}:{fingerprint}", algorithm="sha256"
    ).hexdigest()


class ValidationTicketRefused(ValueError):
    """A validation result whose ticket this dashboard did not issue."""


def version_record_validation(
    *, ticket: dict[str, Any], result: dict[str, Any]
) -> ModelVersion | None:
    """Record the result of a ticket's run, if the row still describes the bytes
    that were validated. Raises ValidationTicketRefused for a forged ticket;
    the result itself is re-checked (it crossed a queue from a worker that ran
    untrusted code)."""
    from dashboard.registry.validation import result_from_queue

    version_id = int(ticket["version_id"])
    fingerprint = str(ticket["fingerprint"])
    if not constant_time_compare(str(ticket.get("token")), _ticket_token(version_id, fingerprint)):
        raise ValidationTicketRefused(f"refused a validation result for version {version_id}")
    outcome = result_from_queue(result)
    row = ModelVersion.objects.filter(pk=version_id).first()
    if row is None:
        return None
    status = ModelVersion.Status.VALID if outcome.ok else ModelVersion.Status.INVALID
    error = outcome.error
    pinned = row.s3_version_id or outcome.s3_version_id or ""
    if outcome.ok and not pinned:
        # A pointer must pin an object version: without one, overwriting the
        # key would change what an environment serves.
        status = ModelVersion.Status.INVALID
        error = "the artifact has no S3 version id: enable versioning on the bucket"
    ModelVersion.objects.filter(
        pk=row.pk, fingerprint=fingerprint, status=ModelVersion.Status.VALIDATING
    ).update(
        status=status,
        status_detail=error,
        s3_version_id=pinned,
        validation=outcome.to_dict(),
        validated_at=timezone.now(),
    )
    row.refresh_from_db()
    return row


def version_hash(*, version_id: int) -> ModelVersion | None:
    """Compute the SHA-256 of an artifact that came without a manifest."""
    from dashboard.registry.validation import hash_version

    row = ModelVersion.objects.filter(pk=version_id).first()
    if row is None or row.has_manifest or row.sha256 or not row.key:
        return row
    result = hash_version(
        bucket=settings.MODELS_BUCKET, key=row.key, s3_version_id=row.s3_version_id or None
    )
    if result.ok and result.sha256:
        ModelVersion.objects.filter(pk=row.pk, fingerprint=row.fingerprint).update(
            sha256=result.sha256,
            size=result.size or row.size,
            s3_version_id=row.s3_version_id or result.s3_version_id or "",
        )
    row.refresh_from_db()
    return row


class VersionDeleteRefused(ValueError):
    """The version is promoted or was live recently."""


def version_delete(*, version: ModelVersion, user: Any) -> None:
    """Remove a version from S3 and the index. Refused for a version that an
    environment points at, or that was live in the last
    ``VERSION_DELETE_PROTECT_DAYS`` days (it may be needed for a rollback)."""
    from dashboard.deployments.models import Deployment, Environment

    pointed = list(
        Environment.objects.filter(
            model_name=version.model_name, promoted_version=version.version
        ).values_list("name", flat=True)
    )
    if pointed:
        raise VersionDeleteRefused(
            f"{version.version} is promoted to {', '.join(pointed)}; promote another version first"
        )
    since = timezone.now() - dt.timedelta(days=settings.VERSION_DELETE_PROTECT_DAYS)
    recent = Deployment.objects.filter(
        environment__model_name=version.model_name,
        finished_at__gte=since,
    ).filter(
        # it was deployed, or something was deployed over it
        Q(to_version=version.version, status="succeeded") | Q(from_version=version.version)
    )
    if recent.exists():
        raise VersionDeleteRefused(
            f"{version.version} was live in the last {settings.VERSION_DELETE_PROTECT_DAYS} days "
            "and may be needed for a rollback"
        )
    base = version_prefix(version.model_name, version.version)
    keys = [o.key for o in s3.iter_objects(bucket=settings.MODELS_BUCKET, prefix=base)]
    # The tombstone first: if S3 fails half-way the name is still retired.
    DeletedVersion.objects.get_or_create(
        model_name=version.model_name,
        version=version.version,
        defaults={"sha256": version.sha256, "deleted_by": user.get_username()},
    )
    for key in keys:
        s3.delete_object(bucket=settings.MODELS_BUCKET, key=key)
    logger.info("%s deleted %s %s", user.get_username(), version.model_name, version.version)
    version.delete()
    audit_record(
        actor=user,
        action=AuditEvent.Action.VERSION_DELETE,
        model=version.model_name,
        version=version.version,
        detail={"sha256": version.sha256, "s3_version_id": version.s3_version_id},
    )
