"""Writes to the model registry: publish, sync from S3, validate."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record
from dashboard.aws import s3
from dashboard.aws.errors import AwsAlreadyExistsError, AwsError, AwsTransientError
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
from dashboard.registry.s3index import VersionInfo, folder_fingerprint, from_listing, scan

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


def _fields(info: VersionInfo) -> dict[str, Any]:
    """The row's columns for what ``info`` says (a fresh, unvalidated state)."""
    return {
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
        "files": info.files,
        "manifest_pending": info.manifest_pending,
        "validation": None,
        "validated_at": None,
    }


def _upsert(info: VersionInfo) -> ModelVersion:
    """Create or refresh the row for ``info``; queue validation when needed."""
    row, _ = ModelVersion.objects.update_or_create(
        model_name=info.model, version=info.version, defaults=_fields(info)
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


def _send(messages: list[tuple[Any, tuple[Any, ...]]]) -> None:
    """Queue many tasks through one producer: one broker connection for all
    of them instead of one checkout of the pool per task (10,000 validations
    queued in about a second instead of several). Each task keeps its own
    routing (its queue). Never raises: what could not be queued is queued
    again by a later sync (manifests) or stays visible as not done."""
    if not messages:
        return
    from dashboard.celery import app

    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for task, args in messages:
                task.apply_async(args, producer=producer)
                sent += 1
    except Exception:
        logger.exception("queued %d of %d tasks; the broker refused the rest", sent, len(messages))


def _send_on_commit(messages: list[tuple[Any, tuple[Any, ...]]]) -> None:
    if messages:
        transaction.on_commit(lambda: _send(messages))


@dataclass(frozen=True)
class SyncReport:
    created: int
    updated: int
    deleted: int
    unchanged: int
    pending: int = 0  # folders whose manifest.json a worker will read


# Manifests read per task, and at once within a task (S3 GETs in threads).
DESCRIBE_BATCH = 250
DESCRIBE_THREADS = 16
# A folder still waiting for its manifest this long after the sync queued it
# lost its task (broker down, worker killed): the next sync queues it again.
DESCRIBE_REQUEUE_AFTER = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class _Known:
    pk: int
    fingerprint: str
    status: str
    manifest_pending: bool
    synced_at: dt.datetime


def registry_sync(*, model: str | None = None) -> SyncReport:
    """Make the index match S3: add new folders, refresh changed ones, drop
    deleted ones. Idempotent; safe to run concurrently with uploads (rows of
    uploads in progress are left alone).

    Everything here comes from the bucket listing: a folder with a
    manifest.json is indexed ``validating`` with ``manifest_pending``, and a
    worker reads the manifests afterwards, many per task
    (:func:`versions_describe`), then queues their validation. Rows are
    written in bulk, one transaction per model, and the tasks are queued
    through one producer once the rows are committed.
    """
    from dashboard.registry.tasks import registry_describe, version_hash

    folders = scan(model=model)
    rows = (
        ModelVersion.objects.all()
        if model is None
        else ModelVersion.objects.filter(model_name=model)
    )
    columns = ("pk", "fingerprint", "status", "manifest_pending", "synced_at")
    existing = {
        (name, version): _Known(*known)
        for name, version, *known in rows.order_by().values_list("model_name", "version", *columns)
    }
    new: dict[str, list[VersionInfo]] = defaultdict(list)
    changed: dict[str, list[tuple[int, VersionInfo]]] = defaultdict(list)
    requeue: list[int] = []
    overdue = timezone.now() - DESCRIBE_REQUEUE_AFTER
    retired = {
        (m, v): at
        for m, v, at in DeletedVersion.objects.filter(
            model_name__in={model for model, _ in folders}
        ).values_list("model_name", "version", "deleted_at")
    }

    def listed(folder: Any) -> VersionInfo:
        info = from_listing(folder)
        deleted_at = retired.get((folder.model, folder.version))
        if deleted_at is None:
            return info
        # Someone re-created a deleted version's folder behind our back: list
        # it, but never let the old name stand for new bytes.
        return dataclasses.replace(
            info,
            status=ModelVersion.Status.INVALID,
            status_detail=(
                f"this version name was deleted on {deleted_at:%Y-%m-%d} and cannot be "
                "reused: upload these files under a new version name"
            ),
            manifest_pending=False,
        )

    for key, folder in folders.items():
        known = existing.get(key)
        if known is None:
            new[folder.model].append(listed(folder))
        elif known.status == ModelVersion.Status.UPLOADING:
            continue  # the upload's completion indexes it
        elif known.fingerprint != folder.fingerprint:
            changed[folder.model].append((known.pk, listed(folder)))
        elif known.manifest_pending and known.synced_at < overdue:
            requeue.append(known.pk)
    gone: dict[str, list[int]] = defaultdict(list)
    for key, known in existing.items():
        if key not in folders and known.status != ModelVersion.Status.UPLOADING:
            gone[key[0]].append(known.pk)
    created = updated = deleted = pending = 0
    # One model at a time, in name order: each transaction moves one counter
    # row (see dbsql.py), and two syncs never take them in opposite orders.
    for name in sorted({*new, *changed, *gone}):
        with transaction.atomic():
            describe: list[int] = []
            hashes: list[int] = []
            for row, info in [
                *_create(name, new.get(name, [])),
                *_refresh(changed.get(name, [])),
            ]:
                if info.manifest_pending:
                    describe.append(row)
                elif (
                    not info.has_manifest
                    and info.artifact
                    and (info.model, info.version) not in retired
                ):
                    hashes.append(row)
            created += len(new.get(name, []))
            updated += len(changed.get(name, []))
            if gone.get(name):
                deleted += ModelVersion.objects.filter(pk__in=gone[name]).delete()[0]
            pending += len(describe)
            _send_on_commit(
                [
                    (registry_describe, (describe[i : i + DESCRIBE_BATCH],))
                    for i in range(0, len(describe), DESCRIBE_BATCH)
                ]
                + [(version_hash, (pk,)) for pk in hashes]
            )
    if requeue:
        logger.warning("queueing again %d folders whose manifest was never read", len(requeue))
        # Marked, so the next sync waits another DESCRIBE_REQUEUE_AFTER for them.
        ModelVersion.objects.filter(pk__in=requeue).update(synced_at=timezone.now())
        _send(
            [
                (registry_describe, (requeue[i : i + DESCRIBE_BATCH],))
                for i in range(0, len(requeue), DESCRIBE_BATCH)
            ]
        )
    return SyncReport(
        created=created,
        updated=updated,
        deleted=deleted,
        unchanged=len(folders) - created - updated,
        pending=pending + len(requeue),
    )


def _create(model: str, infos: list[VersionInfo]) -> list[tuple[int, VersionInfo]]:
    """Insert rows for new folders in bulk; return (pk, info) of each."""
    if not infos:
        return []
    objects = [ModelVersion(model_name=model, version=i.version, **_fields(i)) for i in infos]
    try:
        with transaction.atomic():
            made = ModelVersion.objects.bulk_create(objects, batch_size=500)
        return [(row.pk, info) for row, info in zip(made, infos, strict=True)]
    except IntegrityError:
        # A row appeared since the listing (an upload_model publishing the
        # same version): fall back to one upsert per folder for this model.
        result = []
        for info in infos:
            row, _ = ModelVersion.objects.update_or_create(
                model_name=model, version=info.version, defaults=_fields(info)
            )
            result.append((row.pk, info))
        return result


def _refresh(changes: list[tuple[int, VersionInfo]]) -> list[tuple[int, VersionInfo]]:
    """Rewrite the rows of folders whose files changed (validated afresh)."""
    if not changes:
        return []
    now = timezone.now()
    objects = []
    for pk, info in changes:
        row = ModelVersion(pk=pk, model_name=info.model, version=info.version, **_fields(info))
        row.synced_at = now
        objects.append(row)
    ModelVersion.objects.bulk_update(
        objects, [*_fields(changes[0][1]), "synced_at"], batch_size=200
    )
    return changes


class _Unread(NamedTuple):
    row: ModelVersion
    document: Any
    error: str
    transient: bool


def versions_describe(*, version_ids: list[int]) -> int:
    """Read the manifest.json of versions the sync indexed from the listing,
    record what it says (or why it is unusable, or how it lies about its
    folder), and queue validation of the ones that can be validated.

    Rows that changed since (another sync) or were already described are left
    alone, so a repeated task does nothing. Returns how many rows were
    described. Raises AwsTransientError when some manifests could not be read
    for a reason worth retrying (the others are recorded first).
    """
    from dashboard.registry.s3index import from_manifest, read_manifest
    from dashboard.registry.tasks import version_hash, version_validate

    rows = list(
        ModelVersion.objects.filter(pk__in=version_ids, manifest_pending=True).only(
            "id", "model_name", "version", "fingerprint", "files", "created_at"
        )
    )

    def read(row: ModelVersion) -> _Unread:
        try:
            return _Unread(row, read_manifest(model=row.model_name, version=row.version), "", False)
        except AwsError as exc:
            return _Unread(row, None, str(exc), exc.transient)

    with ThreadPoolExecutor(max_workers=min(DESCRIBE_THREADS, max(1, len(rows)))) as pool:
        results = list(pool.map(read, rows))
    described = 0
    retry = [r for r in results if r.transient]
    messages: list[tuple[Any, tuple[Any, ...]]] = []
    with transaction.atomic():
        for result in results:
            if result.transient:
                continue
            row = result.row
            info = from_manifest(
                model=row.model_name,
                version=row.version,
                files=row.files or {},
                created_at=row.created_at,
                document=result.document,
                error=result.error,
            )
            fields = _fields(info)
            for kept in ("fingerprint", "files"):  # what the listing saw stays
                fields.pop(kept)
            if not ModelVersion.objects.filter(
                pk=row.pk, fingerprint=row.fingerprint, manifest_pending=True
            ).update(**fields):
                continue
            described += 1
            if info.status == ModelVersion.Status.VALIDATING:
                messages.append((version_validate, (row.pk,)))
            elif not info.has_manifest and info.artifact:
                messages.append((version_hash, (row.pk,)))
        _send_on_commit(messages)
    if retry:
        raise AwsTransientError(
            f"{len(retry)} manifests could not be read ({retry[0].error}); retrying them",
            operation="GetObject",
        )
    return described


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
        ModelVersion.objects.filter(pk=version_id).update(validation_queued_at=timezone.now())
        validation_run.delay(ticket)


def validations_requeue_stale() -> int:
    """Queue again the validations that have had no answer for longer than a
    validation may take plus VALIDATION_REQUEUE_GRACE_SECONDS: the worker that
    ran them died (SIGKILL, OOM, a replaced container) and Redis would only
    redeliver the message after CELERY_VISIBILITY_TIMEOUT. A late answer of the
    first run is still accepted (the ticket is the same); a second one is
    ignored. Returns how many were queued."""
    cutoff = timezone.now() - dt.timedelta(
        seconds=settings.VALIDATION_TIME_LIMIT_SECONDS + settings.VALIDATION_REQUEUE_GRACE_SECONDS
    )
    stale = list(
        ModelVersion.objects.filter(
            status=ModelVersion.Status.VALIDATING,
            manifest_pending=False,
            validation_queued_at__lt=cutoff,
        ).values_list("pk", flat=True)[:500]
    )
    for version_id in stale:
        logger.warning("validation of version #%s had no answer; queueing it again", version_id)
        version_validation_enqueue(version_id=version_id)
    return len(stale)


def validation_ticket_create(*, version_id: int) -> dict[str, Any] | None:
    """The plain-data description of a version's validation: a presigned GET
    of the pinned object version, what to expect of it, the limits, and a token
    that only this dashboard can make (so a result for the version can be
    recorded only by the run of this ticket). None when the version is not
    waiting for validation."""
    from dashboard.registry.validation import make_job

    row = ModelVersion.objects.filter(pk=version_id).first()
    if row is None or row.status != ModelVersion.Status.VALIDATING or row.manifest_pending:
        # Pending: its manifest is still to be read; reading it queues this again.
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
    # Deleted meanwhile (a sync saw its folder go): nothing left to return.
    return ModelVersion.objects.filter(pk=row.pk).first()


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
    return ModelVersion.objects.filter(pk=row.pk).first()


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
