"""Uploads straight from the client to S3 (presigned multipart), then indexed.

The bytes never pass through the dashboard: it starts an S3 multipart upload,
hands out one presigned URL per part, and on completion assembles the object,
checks its size, writes manifest.json and queues validation (which verifies
the SHA-256 over the bytes S3 really holds before the version can be promoted).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record
from dashboard.aws import s3
from dashboard.aws.errors import AwsAlreadyExistsError, AwsError
from dashboard.registry.manifest import (
    FORMATS,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    format_for_filename,
    validate_artifact_name,
    validate_input_signature,
    validate_sha256,
)
from dashboard.registry.models import ModelVersion, Upload
from dashboard.registry.names import validate_model_name, validate_version_name, version_prefix
from dashboard.registry.s3index import folder_fingerprint
from dashboard.registry.services import _enqueue_validation, version_name_retired

logger = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit
MAX_PART_BYTES = 5 * 1024**3
_ETAG_RE = re.compile(r'"?[0-9a-fA-F]{32}(-\d+)?"?')


class UploadError(ValueError):
    """Bad input for an upload; ``status`` is the HTTP status that fits."""

    status = 400


class UploadConflict(UploadError):
    status = 409


class UploadNotFound(UploadError):
    status = 404


class UploadForbidden(UploadError):
    status = 403


@dataclass(frozen=True)
class UploadPlan:
    upload: Upload
    parts: list[dict[str, Any]]
    expires_at: dt.datetime
    done: list[s3.PartInfo]


def part_size_for(size: int) -> int:
    """The configured part size, grown (in whole MiB) so the file fits in
    S3's 10,000 parts."""
    base = settings.UPLOAD_PART_BYTES
    needed = math.ceil(size / MAX_PARTS)
    if needed <= base:
        return base
    mib = 1024**2
    return min(MAX_PART_BYTES, math.ceil(needed / mib) * mib)


def upload_start(
    *,
    model: str,
    version: str,
    filename: str,
    size: int,
    sha256: str | None,
    format: str | None,
    input_shape: list[int],
    input_dtype: str,
    notes: str,
    metrics: dict[str, float],
    user: Any,
) -> UploadPlan:
    """Check everything, reserve the version name, start the S3 upload.

    Raises UploadError (400), UploadConflict (409: the version exists or is
    being uploaded). On any failure nothing is left in S3 or the database.
    """
    try:
        validate_model_name(model)
        validate_version_name(version)
        filename = validate_artifact_name(filename, field="filename")
        shape, dtype = validate_input_signature(input_shape, input_dtype)
        if sha256:
            sha256 = validate_sha256(sha256.lower())
    except (ValueError, ManifestError) as exc:
        raise UploadError(str(exc)) from exc
    fmt = format or format_for_filename(filename)
    if fmt not in FORMATS:
        raise UploadError(f"format must be one of {', '.join(FORMATS)}")
    if size <= 0:
        raise UploadError("size must be a positive number of bytes")
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadError(
            f"size {size} bytes is over the limit of {settings.UPLOAD_MAX_BYTES} bytes"
        )
    if len(notes) > 10_000:
        raise UploadError("notes must be at most 10000 characters")
    retired = version_name_retired(model=model, version=version)
    if retired:
        raise UploadConflict(retired)
    if ModelVersion.objects.filter(model_name=model, version=version).exists():
        raise UploadConflict(f"version {version} of {model} already exists")
    bucket = settings.MODELS_BUCKET
    base = version_prefix(model, version)
    if any(True for _ in s3.iter_objects(bucket=bucket, prefix=base)):
        raise UploadConflict(f"version {version} of {model} already exists in S3")
    part_size = part_size_for(size)
    key = base + filename
    now = timezone.now()
    try:
        with transaction.atomic():
            # The row reserves the name: a concurrent upload of the same
            # version hits the unique constraint.
            row = ModelVersion.objects.create(
                model_name=model,
                version=version,
                artifact=filename,
                key=key,
                format=fmt,
                size=size,
                sha256=sha256 or "",
                input_shape=shape,
                input_dtype=dtype,
                created_at=now,
                created_by=user.get_username(),
                notes=notes,
                metrics=metrics,
                has_manifest=False,
                status=ModelVersion.Status.UPLOADING,
                uploaded_by=user,
            )
            upload_id = s3.create_multipart_upload(
                bucket=bucket, key=key, content_type="application/octet-stream"
            )
            upload = Upload.objects.create(
                upload_id=upload_id,
                version=row,
                model_name=model,
                version_name=version,
                key=key,
                filename=filename,
                size=size,
                part_size=part_size,
                sha256=sha256 or "",
                created_by=user,
            )
    except IntegrityError as exc:
        raise UploadConflict(f"version {version} of {model} is already being uploaded") from exc
    return _plan(upload, done=[])


def part_length(upload: Upload, number: int) -> int:
    """The exact size of part ``number``: the part size, less for the last part."""
    start = (number - 1) * upload.part_size
    return min(upload.part_size, upload.size - start)


def _plan(upload: Upload, *, done: list[s3.PartInfo]) -> UploadPlan:
    expires = settings.UPLOAD_URL_EXPIRES_SECONDS
    have = {p.part_number for p in done}
    parts = []
    for number in range(1, upload.part_count + 1):
        if number in have:
            continue
        parts.append(
            {
                "part_number": number,
                "url": s3.presign_upload_part(
                    bucket=settings.MODELS_BUCKET,
                    key=upload.key,
                    upload_id=upload.upload_id,
                    part_number=number,
                    content_length=part_length(upload, number),
                    expires_in=expires,
                ),
            }
        )
    return UploadPlan(
        upload=upload,
        parts=parts,
        expires_at=timezone.now() + dt.timedelta(seconds=expires),
        done=done,
    )


def upload_get(*, model: str, upload_id: str) -> Upload:
    upload = (
        Upload.objects.select_related("version")
        .filter(model_name=model, upload_id=upload_id)
        .first()
    )
    if upload is None:
        raise UploadNotFound(f"no upload {upload_id!r} for model {model}")
    return upload


def _check_uploader(upload: Upload, user: Any, action: str) -> None:
    """Only the user who started an upload, or an admin, may act on it: its
    upload id alone (which shows in logs and URLs) must not be enough."""
    from dashboard.accounts.roles import ADMIN, user_has_role

    if upload.created_by_id != user.pk and not user_has_role(user, ADMIN):
        raise UploadForbidden(
            f"only the user who started this upload, or an admin, may {action} it"
        )


def upload_resume(*, upload: Upload, user: Any) -> UploadPlan:
    """What S3 already has, and fresh URLs for the parts still missing."""
    _check_uploader(upload, user, "resume")
    if upload.state != Upload.State.ACTIVE:
        raise UploadConflict(f"the upload is {upload.state}")
    done = s3.list_parts(bucket=settings.MODELS_BUCKET, key=upload.key, upload_id=upload.upload_id)
    return _plan(upload, done=done)


def _check_parts(upload: Upload, parts: list[tuple[int, str]]) -> None:
    count = upload.part_count
    if not parts:
        raise UploadError("parts must list every uploaded part")
    numbers = [n for n, _ in parts]
    for number, etag in parts:
        if not 1 <= number <= count:
            raise UploadError(f"part {number} does not exist: this upload has parts 1 to {count}")
        if not _ETAG_RE.fullmatch(etag):
            raise UploadError(f"part {number}: etag {etag[:80]!r} is not an S3 ETag")
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise UploadError(f"parts listed twice: {', '.join(map(str, duplicates))}")
    if numbers != sorted(numbers):
        raise UploadError("parts must be listed in ascending part_number order")
    missing = sorted(set(range(1, count + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        raise UploadError(f"parts missing: {shown} (this upload has {count} parts)")


def upload_complete(
    *, upload: Upload, parts: list[tuple[int, str]], sha256: str | None, user: Any
) -> ModelVersion:
    """Assemble the object, check it, write the manifest, queue validation.

    Bad part lists are refused before S3 is asked (400). If S3 refuses the
    parts (an ETag that does not match), the upload stays open so the client
    can fix and retry. A size mismatch deletes the assembled object.
    Nothing that exists in S3 is overwritten: the artifact and the manifest
    are written only if their keys are free (If-None-Match: *).
    """
    _check_uploader(upload, user, "complete")
    if upload.state != Upload.State.ACTIVE:
        raise UploadConflict(f"the upload is {upload.state}")
    declared = (sha256 or upload.sha256 or "").lower()
    try:
        validate_sha256(declared)
    except ManifestError as exc:
        raise UploadError(
            "sha256 of the whole file is required (at start or completion): " + str(exc)
        ) from exc
    if upload.sha256 and sha256 and upload.sha256 != sha256.lower():
        raise UploadError("sha256 differs from the one declared when the upload started")
    _check_parts(upload, parts)
    bucket = settings.MODELS_BUCKET
    try:
        version_id = s3.complete_multipart_upload(
            bucket=bucket, key=upload.key, upload_id=upload.upload_id, parts=parts
        )
    except AwsError as exc:
        if exc.code == "NoSuchUpload":
            # S3 no longer has it (aborted by a lifecycle rule or by hand):
            # release the version name so the client can start over.
            with transaction.atomic():
                _finish(upload, Upload.State.ABORTED)
                if upload.version_id is not None:
                    ModelVersion.objects.filter(
                        pk=upload.version_id, status=ModelVersion.Status.UPLOADING
                    ).delete()
            raise UploadConflict(
                "S3 no longer has this upload (it was aborted); start the upload again"
            ) from exc
        if isinstance(exc, AwsAlreadyExistsError):
            # Something else wrote this key since the upload started (another
            # tool, by hand): S3 kept it. Give up the upload, not the object.
            upload_abort(upload=upload)
            raise UploadConflict(
                f"{upload.key} appeared in S3 while this upload was running; it was kept and "
                "this upload was cancelled: upload under a new version name"
            ) from exc
        if exc.code in {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}:
            raise UploadError(
                f"S3 refused the parts ({exc.code}): check each part's number and ETag"
            ) from exc
        raise
    head = s3.head_object(bucket=bucket, key=upload.key, version_id=version_id)
    row = upload.version
    assert row is not None
    if head is None or head.size != upload.size:
        got = head.size if head else 0
        s3.delete_object(bucket=bucket, key=upload.key)
        _finish(upload, Upload.State.ABORTED)
        row.delete()
        raise UploadError(
            f"the assembled file is {got} bytes but the upload declared {upload.size}; "
            "it was discarded"
        )
    manifest = Manifest(
        model=upload.model_name,
        version=upload.version_name,
        artifact=upload.filename,
        format=row.format,
        sha256=declared,
        size=upload.size,
        input_shape=list(row.input_shape or []),
        input_dtype=row.input_dtype,
        created_at=row.created_at,
        created_by=row.created_by,
        notes=row.notes,
        metrics=row.metrics,
    )
    try:
        s3.put_json(
            bucket=bucket,
            key=version_prefix(upload.model_name, upload.version_name) + MANIFEST_FILE,
            document=manifest.to_dict(),
            only_if_absent=True,
        )
    except AwsError as exc:
        # Our artifact is the current object (the complete was conditional):
        # remove it so no version is left half-written.
        s3.delete_object(bucket=bucket, key=upload.key)
        if isinstance(exc, AwsAlreadyExistsError):
            _finish(upload, Upload.State.ABORTED)
            row.delete()
            raise UploadConflict(
                "a manifest.json appeared in S3 for this version while it was uploading; "
                "it was kept and this upload was discarded: upload under a new version name"
            ) from exc
        raise
    with transaction.atomic():
        ModelVersion.objects.filter(pk=row.pk).update(
            sha256=declared,
            s3_version_id=version_id or head.version_id or "",
            # What the sync will see, so it does not take the folder for a changed one.
            fingerprint=folder_fingerprint(model=upload.model_name, version=upload.version_name),
            has_manifest=True,
            status=ModelVersion.Status.VALIDATING,
            status_detail="",
        )
        _finish(upload, Upload.State.COMPLETED)
        _enqueue_validation(row.pk)
        audit_record(
            actor=user,
            action=AuditEvent.Action.VERSION_UPLOAD,
            model=row.model_name,
            version=row.version,
            detail={"sha256": declared, "size": upload.size, "via": "upload"},
        )
    row.refresh_from_db()
    logger.info("%s uploaded %s %s", user.get_username(), upload.model_name, upload.version_name)
    return row


def _finish(upload: Upload, state: str) -> None:
    Upload.objects.filter(pk=upload.pk).update(state=state, finished_at=timezone.now())


def upload_cancel(*, upload: Upload, user: Any) -> None:
    """A user cancels: only the one who started it, or an admin."""
    _check_uploader(upload, user, "cancel")
    upload_abort(upload=upload)


def upload_abort(*, upload: Upload) -> None:
    """Abort the S3 upload (freeing its parts) and release the name."""
    if upload.state != Upload.State.ACTIVE:
        raise UploadConflict(f"the upload is {upload.state}")
    s3.abort_multipart_upload(
        bucket=settings.MODELS_BUCKET, key=upload.key, upload_id=upload.upload_id
    )
    with transaction.atomic():
        _finish(upload, Upload.State.ABORTED)
        if upload.version_id is not None:
            ModelVersion.objects.filter(
                pk=upload.version_id, status=ModelVersion.Status.UPLOADING
            ).delete()


def uploads_abort_abandoned() -> int:
    """Abort uploads older than UPLOAD_ABANDON_AFTER_HOURS, ours and any other
    multipart upload left under models/ (their parts cost storage). Return how many."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.UPLOAD_ABANDON_AFTER_HOURS)
    aborted = 0
    for upload in Upload.objects.filter(state=Upload.State.ACTIVE, created_at__lt=cutoff):
        try:
            upload_abort(upload=upload)
            aborted += 1
        except (AwsError, UploadError):
            logger.warning("could not abort %s", upload, exc_info=True)
    # Uploads we track are judged by our own clock above; the rest by S3's.
    tracked = set(
        Upload.objects.filter(state=Upload.State.ACTIVE).values_list("upload_id", flat=True)
    )
    for item in s3.iter_multipart_uploads(bucket=settings.MODELS_BUCKET, prefix="models/"):
        if item.upload_id not in tracked and item.initiated < cutoff:
            s3.abort_multipart_upload(
                bucket=settings.MODELS_BUCKET, key=item.key, upload_id=item.upload_id
            )
            aborted += 1
    return aborted
