"""Validation crosses a queue: the dashboard makes a ticket (presigned URL and a
token only it can make), a worker of the ``validation`` queue runs it with no
credentials and no database, and the result is re-checked before it is
recorded. Real S3 (embedded), real sandbox, real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dashboard.celery import app
from dashboard.registry.models import ModelVersion
from dashboard.registry.services import (
    ValidationTicketRefused,
    validation_ticket_create,
    version_publish,
    version_record_validation,
)
from dashboard.registry.validation import run_ticket

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def published(tmp_path: Path, version: str = "1.0") -> ModelVersion:
    path = tmp_path / f"{version}.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    return version_publish(
        model="iris",
        version=version,
        path=path,
        format="torchscript",
        input_shape=[4],
        input_dtype="float32",
        created_by="t",
        artifact="model.pt",
    )


def test_validation_runs_on_its_own_queue() -> None:
    route = app.amqp.router.route({}, "dashboard.registry.tasks.validation_run")
    assert route["queue"].name == "validation"
    default = app.amqp.router.route({}, "dashboard.registry.tasks.version_validate")
    assert default["queue"].name == "celery"


def test_a_ticket_needs_no_credentials_and_records_what_the_sandbox_saw(
    aws: str, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = published(tmp_path)
    ticket = validation_ticket_create(version_id=row.pk)
    assert ticket is not None
    assert "X-Amz-Signature=" in ticket["job"]["url"]

    # The validation worker's side: no AWS credentials at all.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = run_ticket(ticket)

    recorded = version_record_validation(ticket=ticket, result=result)
    assert recorded is not None
    assert recorded.status == "valid", recorded.status_detail
    validation = recorded.validation
    assert validation["sandbox"] == "bwrap"
    assert validation["size"] == row.size
    assert validation["load_seconds"] > 0
    assert "aten::linear" in validation["operators"]
    assert "aten::softmax" in validation["operators"]


def test_a_forged_ticket_or_result_is_not_recorded(aws: str, db: Any, tmp_path: Path) -> None:
    victim = published(tmp_path, "victim")
    ticket = validation_ticket_create(version_id=victim.pk)
    assert ticket is not None
    forged_result = {
        "ok": True,
        "error": "",
        "sha256": victim.sha256,
        "size": victim.size,
        "load_seconds": 0.1,
        "forward_ms": 0.1,
        "parameter_count": 1,
        "output_shape": [1, 3],
        "s3_version_id": victim.s3_version_id or "v1",
        "operators": ["aten::linear"],
        "sandbox": "bwrap",
    }

    # A token for another version (or none) is refused; nothing changes.
    other = published(tmp_path, "other")
    other_ticket = validation_ticket_create(version_id=other.pk)
    assert other_ticket is not None
    with pytest.raises(ValidationTicketRefused):
        version_record_validation(
            ticket={**ticket, "token": other_ticket["token"]}, result=forged_result
        )
    with pytest.raises(ValidationTicketRefused):
        version_record_validation(ticket={**ticket, "token": ""}, result=forged_result)
    victim.refresh_from_db()
    assert victim.status == "validating"

    # With its own ticket, a result that breaks the answer's rules is invalid.
    leaking = {**forged_result, "output_shape": {"root:x:0:0\x1b[2J": [1, 3]}}
    recorded = version_record_validation(ticket=ticket, result=leaking)
    assert recorded is not None
    assert recorded.status == "invalid"
    assert recorded.status_detail == (
        "the validation worker sent a malformed result (an output name is not a valid name)"
    )
    assert "root:x" not in str(recorded.validation)


@pytest.mark.redis
def test_a_validation_whose_worker_died_is_queued_again(
    aws: str, db: Any, tmp_path: Path, settings: Any
) -> None:
    """A validation worker killed mid-run (found by QA: a version stayed
    `validating` for good) leaves an unacknowledged message that Redis would
    redeliver only after the visibility timeout: the sweep queues it again."""
    import datetime as dt

    import redis
    from django.utils import timezone

    from dashboard.registry.services import (
        validations_requeue_stale,
        version_validation_enqueue,
    )

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    stuck, recent, done = (published(tmp_path, v) for v in ("1.0", "1.1", "1.2"))
    for row in (stuck, recent):
        version_validation_enqueue(version_id=row.pk)
    ModelVersion.objects.filter(pk=done.pk).update(status="valid")
    long_ago = timezone.now() - dt.timedelta(
        seconds=settings.VALIDATION_TIME_LIMIT_SECONDS
        + settings.VALIDATION_REQUEUE_GRACE_SECONDS
        + 60
    )
    ModelVersion.objects.filter(pk__in=[stuck.pk, done.pk]).update(validation_queued_at=long_ago)
    queued_before = broker.llen("validation")

    assert validations_requeue_stale() == 1

    assert broker.llen("validation") == queued_before + 1
    stuck.refresh_from_db()
    assert stuck.validation_queued_at is not None and stuck.validation_queued_at > long_ago
    assert validations_requeue_stale() == 0  # not again until it is stale again
