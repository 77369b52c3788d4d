from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Value
from django.db.models.functions import Concat, Lower

STATUSES = ("uploading", "validating", "valid", "invalid")


class ModelVersion(models.Model):
    """The database's index of one version folder in S3 (models/<model>/<version>/).

    S3 is the source of truth: a periodic sync creates, updates and deletes
    these rows from what the bucket holds. The row adds what S3 does not know:
    the validation result and the upload's progress.
    """

    class Status(models.TextChoices):
        UPLOADING = "uploading"
        VALIDATING = "validating"
        VALID = "valid"
        INVALID = "invalid"

    model_name = models.CharField(max_length=63)
    version = models.CharField(max_length=64)
    artifact = models.CharField(max_length=128, blank=True)
    key = models.CharField(max_length=300, blank=True)
    format = models.CharField(max_length=16, blank=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    s3_version_id = models.CharField(max_length=1024, blank=True)
    fingerprint = models.CharField(
        max_length=64,
        blank=True,
        help_text="Hash of the folder's keys, sizes and ETags at the last sync.",
    )
    input_shape = models.JSONField(null=True, blank=True)
    input_dtype = models.CharField(max_length=8, blank=True)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    has_manifest = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    status_detail = models.TextField(blank=True)
    validation = models.JSONField(
        null=True, blank=True, help_text="load time, forward latency, parameters, output shape"
    )
    validated_at = models.DateTimeField(null=True, blank=True)
    validation_queued_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its validation was last handed to the validation queue "
        "(validations_requeue_stale queues it again if no answer comes).",
    )
    synced_at = models.DateTimeField(auto_now=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    manifest_pending = models.BooleanField(
        default=False,
        help_text="Indexed from the bucket listing; a worker has yet to read its manifest.json.",
    )
    files = models.JSONField(
        default=dict, blank=True, help_text="The folder's files and their sizes at the last sync."
    )
    # What the search box matches (substring, case-insensitive). A trigram
    # index covers it (migration 0003): pg_trgm on PostgreSQL, FTS5 on SQLite.
    search = models.GeneratedField(
        expression=Lower(
            Concat(
                "version",
                Value(" "),
                "notes",
                Value(" "),
                "created_by",
                Value(" "),
                "sha256",
                output_field=models.TextField(),
            )
        ),
        output_field=models.TextField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["model_name", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "version"], name="version_unique_name"),
        ]
        # One index per (filter, sort) the list offers, so every first page and
        # every keyset page is an index range scan that stops after one page:
        # no sort step, whatever the number of versions (tests/dashboard/
        # test_registry_scale.py checks the plans on PostgreSQL and SQLite).
        indexes = [
            models.Index(fields=["model_name", "-created_at", "-id"], name="version_newest"),
            models.Index(fields=["model_name", "size", "id"], name="version_size"),
            models.Index(
                fields=["model_name", "status", "-created_at", "-id"], name="version_status_newest"
            ),
            models.Index(fields=["model_name", "status", "version"], name="version_status_name"),
            models.Index(fields=["model_name", "status", "size", "id"], name="version_status_size"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.version} ({self.status})"

    @property
    def promotable(self) -> bool:
        return self.status == self.Status.VALID

    @property
    def input_signature(self) -> str:
        if not self.input_shape:
            return ""
        return f"{self.input_dtype}[{', '.join(str(d) for d in self.input_shape)}]"


class VersionCount(models.Model):
    """How many versions a model has, in all and per status.

    Kept by database triggers on ModelVersion (migration 0003): every insert,
    delete and status change, bulk or not and from any code path, moves these
    numbers in the same transaction. The list pages read them instead of
    running COUNT(*) over every version of the model.
    """

    model_name = models.CharField(max_length=63, primary_key=True)
    total = models.BigIntegerField(default=0)
    uploading = models.BigIntegerField(default=0)
    validating = models.BigIntegerField(default=0)
    valid = models.BigIntegerField(default=0)
    invalid = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.model_name}: {self.total} versions"

    def of(self, status: str | None) -> int:
        """The number of versions with ``status`` (all of them for None)."""
        if status is None:
            return self.total
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return int(getattr(self, status))


class Upload(models.Model):
    """A browser or CI upload in progress: an S3 multipart upload whose parts
    the client PUTs straight to S3 with presigned URLs. Its version row has
    status ``uploading`` until the upload is completed or aborted."""

    class State(models.TextChoices):
        ACTIVE = "active"
        COMPLETED = "completed"
        ABORTED = "aborted"

    upload_id = models.CharField(max_length=1024, unique=True, help_text="S3's UploadId.")
    version = models.OneToOneField(
        ModelVersion, on_delete=models.SET_NULL, related_name="upload", null=True, blank=True
    )
    model_name = models.CharField(max_length=63)
    version_name = models.CharField(max_length=64)
    key = models.CharField(max_length=300)
    filename = models.CharField(max_length=128)
    size = models.BigIntegerField()
    part_size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True, help_text="As declared by the client.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload of {self.model_name} {self.version_name} ({self.state})"

    @property
    def part_count(self) -> int:
        return max(1, -(-self.size // self.part_size))


class DeletedVersion(models.Model):
    """A tombstone: this version name of this model was deleted and is never
    used again. A pointer, a deployment record or a cache keyed by
    (model, version) must not come to mean different bytes."""

    model_name = models.CharField(max_length=63)
    version = models.CharField(max_length=64)
    sha256 = models.CharField(max_length=64, blank=True, help_text="What the name stood for.")
    deleted_at = models.DateTimeField(auto_now_add=True)
    deleted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["model_name", "-deleted_at"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "version"], name="deleted_version_once"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.version} (deleted {self.deleted_at:%Y-%m-%d})"
