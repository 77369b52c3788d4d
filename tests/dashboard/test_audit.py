"""The audit history: what audit_record keeps, which actions write it, and
the filterable /audit/ page."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.test import Client

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import DETAIL_MAX_BYTES, audit_record
from dashboard.deployments.models import Deployment
from tests.conftest import publish
from tests.dashboard.factories import make_environment
from tests.dashboard.test_uploads import api, put_parts, start

pytestmark = pytest.mark.django_db


def test_username_survives_user_deletion(personas: Any) -> None:
    user = get_user_model().objects.create_user(username="carol", password="x")
    event = audit_record(actor=user, action="token_create", object_repr="ci")
    user.delete()
    event.refresh_from_db()
    assert event.actor_id is None
    assert event.actor_name == "carol"


def test_system_actor_and_name_override(db: Any) -> None:
    system = audit_record(actor=None, action="deployment_finished", result="succeeded")
    assert (system.actor_id, system.actor_name) == (None, "system")
    outside = audit_record(
        actor=None,
        action="pointer_external",
        actor_name="arn:aws:iam::123456789012:user/bob",
        model="iris",
        environment="staging",
        version="9.9",
    )
    assert outside.actor_name == "arn:aws:iam::123456789012:user/bob"
    assert (outside.model_name, outside.environment_name, outside.version) == (
        "iris",
        "staging",
        "9.9",
    )


def test_deployment_and_environment_fill_where(db: Any, personas: Any) -> None:
    environment = make_environment("iris", "production")
    deployment = Deployment.objects.create(
        environment=environment, to_version="1.2", pointer={}, status="pending"
    )
    event = audit_record(
        actor=personas["deployer"], action="promote", deployment=deployment, reason="better"
    )
    assert (event.model_name, event.environment_name, event.version) == (
        "iris",
        "production",
        "1.2",
    )
    assert event.deployment_id == deployment.pk and event.actor_name == "deployer"
    rules = audit_record(
        actor=personas["admin"], action="environment_rules", environment=environment
    )
    assert (rules.model_name, rules.environment_name) == ("iris", "production")


def test_unknown_action_is_a_programming_error(db: Any) -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        audit_record(actor=None, action="promoted")
    assert not AuditEvent.objects.exists()


def test_long_values_are_cut_not_refused(db: Any) -> None:
    event = audit_record(
        actor=None, action="promote", reason="r" * 2000, object_repr="o" * 999, result="x" * 99
    )
    event.refresh_from_db()
    assert len(event.reason) == 500 and event.reason.endswith("…")
    assert len(event.object_repr) == 200 and len(event.result) == 32


def test_nul_characters_never_make_the_write_fail(db: Any) -> None:
    event = audit_record(
        actor=None, action="promote", reason="a\x00b", detail={"k\x00": ["x\x00y"]}
    )
    event.refresh_from_db()
    assert event.reason == "ab" and event.detail == {"k": ["xy"]}


def test_detail_is_stored_as_json_and_kept_small(db: Any) -> None:
    when = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
    event = audit_record(actor=None, action="promote", detail={"at": when, "n": 1})
    event.refresh_from_db()
    assert event.detail == {"at": "2026-11-24T03:00:00Z", "n": 1}
    big = audit_record(actor=None, action="promote", detail={"blob": "x" * DETAIL_MAX_BYTES})
    big.refresh_from_db()
    assert big.detail["truncated"] is True and len(big.detail["excerpt"]) == 1000


def test_an_event_rolls_back_with_its_transaction(db: Any) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=None, action="promote")
        raise RuntimeError("the action failed")
    assert not AuditEvent.objects.exists()


# --- Actions that write the history --------------------------------------------


def test_token_create_and_revoke_from_the_settings_page(personas: Any) -> None:
    client = Client()
    client.force_login(personas["viewer"])
    client.post("/settings/", {"name": "laptop"})
    token = personas["viewer"].api_tokens.get()
    client.post(f"/settings/tokens/{token.pk}/revoke")
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["token_create", "token_revoke"]
    assert all(e.actor_name == "viewer" and e.object_id == str(token.pk) for e in events)
    assert events[0].object_repr.startswith("laptop (mdk_")
    # Revoking twice changes nothing and records nothing.
    client.post(f"/settings/tokens/{token.pk}/revoke")
    assert AuditEvent.objects.count() == 2


def test_token_from_the_command_line(personas: Any, capsys: Any) -> None:
    call_command("create_api_token", "deployer", "--name", "ci")
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_name, event.object_type) == (
        "token_create",
        "deployer",
        "api_token",
    )


def test_upload_completion_is_recorded(client: Client, aws: str, personas: Any) -> None:
    data = os.urandom(1024)
    plan = start(client, personas["deployer"], data, version="3.0").json()
    before = AuditEvent.objects.filter(action="version_upload").count()
    done = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": put_parts(plan, data), "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert done.status_code == 201, done.content
    event = AuditEvent.objects.filter(action="version_upload").latest("id")
    assert AuditEvent.objects.filter(action="version_upload").count() == before + 1
    assert (event.actor_name, event.model_name, event.version) == ("deployer", "iris", "3.0")
    assert event.detail["sha256"] == hashlib.sha256(data).hexdigest()


def test_refused_completion_records_nothing(client: Client, aws: str, personas: Any) -> None:
    data = os.urandom(1024)
    plan = start(client, personas["deployer"], data, version="3.1").json()
    refused = api(
        client,
        "post",
        f"iris/uploads/{plan['upload_id']}/complete",
        personas["deployer"],
        {"parts": [], "sha256": hashlib.sha256(data).hexdigest()},
    )
    assert refused.status_code == 400
    assert not AuditEvent.objects.filter(action="version_upload").exists()


def test_publish_and_delete_are_recorded(aws: str, personas: Any, tmp_path: Path) -> None:
    publish("iris", "1.0", tmp_path, created_by="seed-script")
    uploaded = AuditEvent.objects.get(action="version_upload")
    assert (uploaded.actor_id, uploaded.actor_name, uploaded.version) == (
        None,
        "seed-script",
        "1.0",
    )
    client = Client()
    client.force_login(personas["deployer"])
    response = client.post("/models/iris/versions/1.0/delete", {"confirm": "1.0"})
    assert response.status_code == 302
    deleted = AuditEvent.objects.get(action="version_delete")
    assert (deleted.actor_name, deleted.model_name, deleted.version) == ("deployer", "iris", "1.0")
    assert len(deleted.detail["sha256"]) == 64


def test_refused_delete_records_nothing(aws: str, personas: Any, tmp_path: Path) -> None:
    publish("iris", "1.0", tmp_path)
    environment = make_environment("iris", "staging")
    environment.promoted_version = "1.0"
    environment.save(update_fields=["promoted_version"])
    client = Client()
    client.force_login(personas["deployer"])
    client.post("/models/iris/versions/1.0/delete", {"confirm": "1.0"})
    assert not AuditEvent.objects.filter(action="version_delete").exists()


# --- The page ------------------------------------------------------------------


@pytest.fixture
def history(personas: Any) -> dict[str, Any]:
    environment = make_environment("iris", "staging")
    deployment = Deployment.objects.create(
        environment=environment, to_version="1.1", pointer={}, status="succeeded"
    )
    base = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
    audit_record(
        actor=personas["deployer"],
        action="promote",
        deployment=deployment,
        reason="ship it",
        at=base,
    )
    audit_record(
        actor=None,
        action="deployment_finished",
        deployment=deployment,
        result="succeeded",
        at=base + dt.timedelta(minutes=5),
    )
    audit_record(
        actor=personas["admin"],
        action="token_create",
        object_type="api_token",
        object_repr="ci (mdk_abc…)",
        at=base + dt.timedelta(days=2),
    )
    audit_record(
        actor=personas["deployer"],
        action="version_delete",
        model="fraud",
        version="0.1",
        at=base + dt.timedelta(days=3),
    )
    return {"deployment": deployment}


def page(user: Any, query: str = "") -> Any:
    client = Client()
    client.force_login(user)
    return client.get(f"/audit/{query}")


def rows(response: Any) -> list[str]:
    return [e.action for e in response.context["page"].items]


def test_page_lists_newest_first_with_links(personas: Any, history: Any) -> None:
    response = page(personas["viewer"])
    assert response.status_code == 200
    assert rows(response) == ["version_delete", "token_create", "deployment_finished", "promote"]
    html = response.content.decode()
    deployment = history["deployment"].pk
    assert f'href="/deployments/{deployment}/"' in html
    assert 'href="/models/iris/versions/1.1/"' in html
    assert 'href="?model=iris&amp;environment=staging"' in html
    # A deleted version is named, not linked (its page is gone).
    assert 'href="/models/fraud/versions/0.1/"' not in html
    assert "ship it" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?action=promote", ["promote"]),
        ("?action=promote,deployment_finished", ["deployment_finished", "promote"]),
        ("?model=iris", ["deployment_finished", "promote"]),
        ("?model=iris&environment=staging", ["deployment_finished", "promote"]),
        ("?environment=production", []),
        ("?model=iris&version=1.1", ["deployment_finished", "promote"]),
        ("?user=admin", ["token_create"]),
        ("?user=system", ["deployment_finished"]),
        ("?since=2026-11-22", ["version_delete", "token_create"]),
        ("?until=2026-11-20", ["deployment_finished", "promote"]),
        (
            "?since=2026-11-20T12:05:00Z&until=2026-11-22T12:00:00Z",
            ["token_create", "deployment_finished"],
        ),
        ("?until=2026-11-20T12:04:59", ["promote"]),
    ],
)
def test_filters(personas: Any, history: Any, query: str, expected: list[str]) -> None:
    response = page(personas["viewer"], query)
    assert response.status_code == 200
    assert rows(response) == expected


def test_filter_by_deployment(personas: Any, history: Any) -> None:
    response = page(personas["viewer"], f"?deployment={history['deployment'].pk}")
    assert rows(response) == ["deployment_finished", "promote"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?action=nope", "action"),
        ("?model=Not%20A%20Model", "model"),
        ("?environment=UPPER", "environment"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01", "until"),
        ("?since=2026-11-22&until=2026-11-21", "until"),
        ("?deployment=abc", "deployment"),
        ("?version=..", "version"),
        ("?until=9999-12-31", "until"),
        ("?user=a%00b", "user"),
    ],
)
def test_bad_filters_say_which(personas: Any, history: Any, query: str, parameter: str) -> None:
    response = page(personas["viewer"], query)
    assert response.status_code == 400
    assert response.context["error"].parameter == parameter
    assert f"Filter <b>{parameter}</b>" in response.content.decode()


def test_paging_keeps_the_filters(personas: Any, db: Any) -> None:
    for n in range(120):
        audit_record(actor=personas["admin"], action="token_create", object_repr=f"t{n}")
    audit_record(actor=personas["viewer"], action="token_create", object_repr="other")
    first = page(personas["viewer"], "?user=admin")
    assert first.context["page"].total == 120 and len(rows(first)) == 50
    assert 'href="?user=admin&amp;page=2"' in first.content.decode()
    third = page(personas["viewer"], "?user=admin&page=3")
    assert [e.object_repr for e in third.context["page"].items][-1] == "t0"
    assert len(rows(third)) == 20


def test_nav_links_the_page_for_every_role_but_not_outsiders(personas: Any) -> None:
    client = Client()
    client.force_login(personas["viewer"])
    assert 'href="/audit/"' in client.get("/settings/").content.decode()
    client.force_login(personas["outsider"])
    assert 'href="/audit/"' not in client.get("/settings/").content.decode()


def test_version_page_links_its_history(aws: str, personas: Any, tmp_path: Path) -> None:
    publish("iris", "1.0", tmp_path)
    client = Client()
    client.force_login(personas["viewer"])
    html = client.get("/models/iris/versions/1.0/").content.decode()
    assert 'href="/audit/?model=iris&amp;version=1.0"' in html
    history = page(personas["viewer"], "?model=iris&version=1.0")
    assert rows(history) == ["version_upload"]


def test_csv_link_carries_the_matching_filters(personas: Any, history: Any) -> None:
    html = page(personas["viewer"], "?model=iris&user=deployer&action=promote").content.decode()
    assert "/api/deployments?format=csv&amp;model=iris&amp;requested_by=deployer" in html


def test_detail_reads_as_changes_and_lists(personas: Any) -> None:
    audit_record(
        actor=personas["admin"],
        action="webhook_update",
        detail={
            "changed": {
                "events": {"from": ["deployment.failed"], "to": ["a", "b"]},
                "active": {"from": True, "to": False},
            },
            "note": "x",
        },
    )
    html = page(personas["viewer"]).content.decode()
    assert "deployment.failed → a, b" in html
    assert "true → false" in html
    assert '<span class="muted">note</span> x' in html
