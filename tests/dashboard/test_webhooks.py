"""Webhooks: where they may point, what they send, and how deliveries are
retried, all against a real HTTP receiver on loopback (a thread server that
checks the signature and answers from a script)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from typing import Any

import pytest
from django.db import close_old_connections, connection, transaction
from django.test import Client
from django.utils import timezone

from dashboard.audit.models import AuditEvent
from dashboard.deployments.models import Deployment, DeploymentEvent
from dashboard.webhooks.addresses import WebhookUrlError, check_url
from dashboard.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from dashboard.webhooks.selectors import webhook_deliveries_due
from dashboard.webhooks.services import (
    EVENTS,
    WebhookError,
    retry_delay,
    webhook_attempt,
    webhook_create,
    webhook_rotate_secret,
    webhook_send_test,
    webhook_update,
    webhooks_emit,
)
from tests.dashboard.factories import make_environment, token_headers
from tests.dashboard.webhook_receiver import Answer, receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(personas: Any) -> Any:
    return make_environment("iris", "staging")


@pytest.fixture
def deployment(env: Any, personas: Any) -> Deployment:
    row = Deployment.objects.create(
        environment=env,
        to_version="1.1",
        from_version="1.0",
        pointer={"version": "1.1"},
        status="succeeded",
        requested_by=personas["deployer"],
        reason="better accuracy",
    )
    DeploymentEvent.objects.create(deployment=row, message="live")
    return row


def hook(env: Any, personas: Any, url: str, events: list[str] | None = None, **kw: Any) -> Any:
    return webhook_create(
        environment=env, url=url, events=list(events or EVENTS), actor=personas["admin"], **kw
    )


def make_due(delivery: WebhookDelivery) -> None:
    """As if the retry delay had passed."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


# --- Where a webhook may point ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("http://169.254.170.2/v2/credentials", "link-local or cloud metadata"),
        ("http://[fd00:ec2::254]/latest/", "link-local or cloud metadata"),
        ("http://[fe80::1]/", "link-local or cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "link-local or cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local or cloud metadata"),
        ("http://2852039166/", "resolves to 169.254.169.254"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
        ("http://0.0.0.0:8000/", "not a unicast address"),
        ("http://224.0.0.1/", "not a unicast address"),
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("http:///no-host", "no host"),
        ("https://example.com/hook#part", "fragment"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("http://example.com:99999/", "not a URL"),
        ("", "enter the receiver's URL"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    with pytest.raises(WebhookUrlError, match=message):
        check_url(url, allow_loopback=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://localhost/x", "http://[::1]:8080/"])
def test_loopback_only_outside_production(url: str) -> None:
    assert check_url(url, allow_loopback=True).url == url
    with pytest.raises(WebhookUrlError, match="loopback address"):
        check_url(url, allow_loopback=False)


def test_private_networks_and_unresolved_names_are_accepted() -> None:
    assert check_url("http://10.1.2.3/hook", allow_loopback=False).note == ""
    assert check_url("https://[fd12:3456::1]/hook", allow_loopback=False).note == ""
    unresolved = check_url("https://hooks.invalid/modeldeck", allow_loopback=False)
    assert "does not resolve" in unresolved.note


def test_production_mode_refuses_loopback_when_configuring(
    env: Any, personas: Any, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    with pytest.raises(WebhookError, match="loopback") as refused:
        hook(env, personas, "http://127.0.0.1:8080/hook")
    assert refused.value.field == "url"
    assert not Webhook.objects.exists()


def test_connect_time_check_holds_when_the_setting_changes(
    env: Any, personas: Any, deployment: Any, settings: Any
) -> None:
    with receiver(200) as rec:
        hook(env, personas, rec.url)
        settings.WEBHOOK_ALLOW_LOOPBACK = False
        [delivery] = webhooks_emit(
            environment=env, event="deployment.succeeded", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
        assert done is not None
        assert "refused" in done.last_error and "loopback" in done.last_error
        assert rec.received == []


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    """Answer DNS for ``names`` (the network edge); everything else as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return real(names[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_later_resolves_to_metadata_is_never_contacted(
    env: Any, personas: Any, deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"hooks.example.test": "127.0.0.1"})
    with receiver(200) as rec:
        port = rec.url.split(":")[2].split("/")[0]
        hook(env, personas, f"http://hooks.example.test:{port}/hook")
        # DNS rebinding: the name now points at the metadata service.
        fake_dns(monkeypatch, {"hooks.example.test": "169.254.169.254"})
        [delivery] = webhooks_emit(
            environment=env, event="deployment.succeeded", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
        assert done is not None and "link-local or cloud metadata" in done.last_error
        assert done.last_status_code is None and rec.received == []


def test_the_checked_address_is_the_one_connected_to(
    env: Any, personas: Any, deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"hooks.example.test": "127.0.0.1"})
    with receiver(200) as rec:
        port = rec.url.split(":")[2].split("/")[0]
        hook(env, personas, f"http://hooks.example.test:{port}/hook")
        [delivery] = webhooks_emit(
            environment=env, event="deployment.succeeded", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
        assert done is not None and done.state == "succeeded", done.last_error
        [request] = rec.received
        assert request.headers["host"] == f"hooks.example.test:{port}"


# --- What is sent ------------------------------------------------------------------


def test_signed_body_retried_after_500_then_delivered(
    client: Client,
    env: Any,
    personas: Any,
    deployment: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with receiver(500, 200) as rec:
        saved = hook(env, personas, rec.url, ["deployment.succeeded"])
        assert saved.secret.startswith("whsec_") and len(saved.secret) > 40
        with django_capture_on_commit_callbacks() as callbacks:
            [delivery] = webhooks_emit(
                environment=env, event="deployment.succeeded", deployment=deployment
            )
        assert len(callbacks) == 1  # the first attempt is queued on commit

        first = webhook_attempt(delivery_id=delivery.pk)
        assert first is not None
        assert (first.state, first.attempts, first.last_status_code) == ("pending", 1, 500)
        assert first.next_attempt_at is not None
        wait = (first.next_attempt_at - timezone.now()).total_seconds()
        assert 25 < wait < 34  # 30 s, give or take the jitter
        assert webhook_attempt(delivery_id=delivery.pk) is None  # not due yet
        assert len(rec.received) == 1

        make_due(delivery)
        second = webhook_attempt(delivery_id=delivery.pk)
        assert second is not None
        assert (second.state, second.attempts, second.last_status_code) == ("succeeded", 2, 200)
        assert webhook_attempt(delivery_id=delivery.pk) is None  # done is done

    one, two = rec.received
    assert one.body == two.body  # the same bytes, so the same signature
    assert one.signature_valid(saved.secret) and two.signature_valid(saved.secret)
    assert not one.signature_valid("whsec_someone-else")
    assert one.headers["x-modeldeck-event"] == "deployment.succeeded"
    assert one.headers["x-modeldeck-delivery"] == str(delivery.delivery_id)
    assert one.headers["content-type"] == "application/json"
    body = one.json
    assert set(body) == {"event", "delivery_id", "sent_at", "deployment"}
    assert body["event"] == "deployment.succeeded"
    assert body["delivery_id"] == str(delivery.delivery_id)
    assert dt.datetime.fromisoformat(body["sent_at"]).tzinfo is not None
    shown = client.get(
        f"/api/deployments/{deployment.pk}", headers=token_headers(personas["viewer"])
    ).json()
    assert body["deployment"] == shown

    log = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in log] == [(1, 500), (2, 200)]
    assert all(a.duration_ms is not None for a in log)
    assert "500" in log[0].error and log[1].error == ""


def test_gives_up_after_the_last_attempt(
    env: Any, personas: Any, deployment: Any, settings: Any
) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with receiver(503) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        for _ in range(3):
            make_due(delivery)
            webhook_attempt(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
        assert delivery.finished_at is not None
        make_due(delivery)
        assert webhook_attempt(delivery_id=delivery.pk) is None  # failed is final
        assert len(rec.received) == 3
    assert [a.status_code for a in delivery.log.all()] == [503, 503, 503]


def test_backoff_is_exponential_capped_and_spans_about_a_day(settings: Any) -> None:
    expected = [30, 120, 480, 1920, 7680, 30720, 43200]
    delays = [retry_delay(n).total_seconds() for n in range(1, 8)]
    for got, want in zip(delays, expected, strict=True):
        assert want * 0.9 <= got <= want * 1.1
    total_hours = sum(delays) / 3600
    assert 20 < total_hours < 26
    assert retry_delay(30).total_seconds() <= 43200 * 1.1


def test_only_active_subscribed_webhooks_of_that_environment(
    env: Any, personas: Any, deployment: Any
) -> None:
    started = hook(env, personas, "http://10.0.0.1/a", ["deployment.started"]).webhook
    hook(env, personas, "http://10.0.0.1/b", ["deployment.succeeded"])
    hook(env, personas, "http://10.0.0.1/c", list(EVENTS), active=False)
    other = make_environment("iris", "production")
    hook(other, personas, "http://10.0.0.1/d", list(EVENTS))
    deliveries = webhooks_emit(environment=env, event="deployment.started", deployment=deployment)
    assert [d.webhook_id for d in deliveries] == [started.pk]
    assert WebhookDelivery.objects.count() == 1


def test_nothing_is_sent_for_a_rolled_back_transaction(
    env: Any, personas: Any, deployment: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook(env, personas, "http://10.0.0.1/a")
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            webhooks_emit(environment=env, event="deployment.started", deployment=deployment)
            raise RuntimeError("the state change failed")
    assert callbacks == []
    assert not WebhookDelivery.objects.exists()


def test_drift_names_the_environment_and_the_drift(env: Any, personas: Any) -> None:
    with receiver(200) as rec:
        hook(env, personas, rec.url, ["drift.detected"])
        drift = {
            "reason": "the pointer was changed outside the dashboard",
            "pointer_version": "9.9",
            "live_version": "1.1",
            "deployed_version": "1.1",
        }
        [delivery] = webhooks_emit(
            environment=env, event="drift.detected", deployment=None, extra={"drift": drift}
        )
        webhook_attempt(delivery_id=delivery.pk)
    body = rec.received[0].json
    assert body["deployment"] is None
    assert body["environment"] == {"model": "iris", "name": "staging"}
    assert body["drift"] == drift


@pytest.mark.parametrize(
    ("event", "extra", "message"),
    [
        ("deployment.done", None, "unknown webhook event"),
        ("ping", None, "unknown webhook event"),
        ("drift.detected", None, "needs extra"),
        ("deployment.started", {"event": "x"}, "must not set event"),
    ],
)
def test_emit_refuses_what_the_contract_does_not_allow(
    env: Any, event: str, extra: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        webhooks_emit(environment=env, event=event, extra=extra)


# --- How it is sent ----------------------------------------------------------------


def test_redirects_are_not_followed(env: Any, personas: Any, deployment: Any) -> None:
    with receiver(Answer(302, headers={"Location": "/elsewhere"})) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
    assert done is not None and done.state == "pending" and done.last_status_code == 302
    assert "redirects are not followed" in done.last_error
    assert [r.path for r in rec.received] == ["/hook"]


def test_a_slow_receiver_times_out(env: Any, personas: Any, deployment: Any, settings: Any) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with receiver(Answer(200, delay=3)) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
    assert done is not None and done.state == "pending"
    assert "timed out" in done.last_error and done.last_status_code is None
    [attempt] = done.log.all()
    assert attempt.duration_ms is not None and attempt.duration_ms < 2500


def test_a_huge_answer_is_not_read_whole(env: Any, personas: Any, deployment: Any) -> None:
    with receiver(Answer(200, body=b"x" * (8 * 1024 * 1024))) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        done = webhook_attempt(delivery_id=delivery.pk)
    assert done is not None and done.state == "succeeded"
    [attempt] = done.log.all()
    assert attempt.response_excerpt == "x" * 500


def test_an_unreachable_receiver_is_retried(env: Any, personas: Any, deployment: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    hook(env, personas, f"http://127.0.0.1:{port}/hook")
    [delivery] = webhooks_emit(environment=env, event="deployment.failed", deployment=deployment)
    done = webhook_attempt(delivery_id=delivery.pk)
    assert done is not None and done.state == "pending" and "ConnectError" in done.last_error


def test_a_dead_workers_claim_is_taken_over(env: Any, personas: Any, deployment: Any) -> None:
    with receiver(200) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        now = timezone.now()
        # As a worker killed mid-request leaves it: claimed, counted, unrecorded.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            state="sending", claim="dead", claimed_until=now + dt.timedelta(seconds=60), attempts=1
        )
        assert webhook_deliveries_due(now=now) == []
        assert webhook_attempt(delivery_id=delivery.pk) is None  # the claim still holds
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            claimed_until=now - dt.timedelta(seconds=1)
        )
        assert webhook_deliveries_due(now=timezone.now()) == [delivery.pk]
        done = webhook_attempt(delivery_id=delivery.pk)
    assert done is not None and done.state == "succeeded" and done.attempts == 2
    lost, ok = done.log.all()
    assert lost.number == 1 and "result is unknown" in lost.error
    assert ok.number == 2 and ok.status_code == 200
    assert len(rec.received) == 1


def test_due_deliveries(env: Any, personas: Any, deployment: Any) -> None:
    hook(env, personas, "http://10.0.0.1/a")
    rows = [
        webhooks_emit(environment=env, event="deployment.failed", deployment=deployment)[0]
        for _ in range(5)
    ]
    now = timezone.now()
    later = now + dt.timedelta(minutes=5)
    earlier = now - dt.timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=rows[1].pk).update(next_attempt_at=later)
    WebhookDelivery.objects.filter(pk=rows[2].pk).update(state="sending", claimed_until=earlier)
    WebhookDelivery.objects.filter(pk=rows[3].pk).update(state="sending", claimed_until=later)
    WebhookDelivery.objects.filter(pk=rows[4].pk).update(state="succeeded", next_attempt_at=None)
    assert webhook_deliveries_due(now=now) == [rows[0].pk, rows[2].pk]


def test_switching_a_webhook_off_stops_its_deliveries(
    env: Any, personas: Any, deployment: Any
) -> None:
    with receiver(200) as rec:
        saved = hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        webhook_update(
            webhook=saved.webhook,
            url=rec.url,
            events=list(EVENTS),
            active=False,
            actor=personas["admin"],
        )
        done = webhook_attempt(delivery_id=delivery.pk)
        assert done is not None and done.state == "failed" and "switched off" in done.last_error
        assert done.attempts == 0 and not done.log.exists()
        # The test button still reaches it: that is how one checks it before switching it on.
        ping = webhook_send_test(webhook=saved.webhook)
        webhook_attempt(delivery_id=ping.pk)
    [request] = rec.received
    assert request.json["event"] == "ping" and request.headers["x-modeldeck-event"] == "ping"
    assert request.json["environment"] == {"model": "iris", "name": "staging"}
    assert request.json["deployment"]["id"] == deployment.pk
    assert request.signature_valid(saved.secret)


def test_rotation_signs_the_next_attempt_with_the_new_secret(
    env: Any, personas: Any, deployment: Any
) -> None:
    with receiver(500, 200) as rec:
        saved = hook(env, personas, rec.url)
        [delivery] = webhooks_emit(
            environment=env, event="deployment.failed", deployment=deployment
        )
        webhook_attempt(delivery_id=delivery.pk)
        rotated = webhook_rotate_secret(webhook=saved.webhook, actor=personas["admin"])
        make_due(delivery)
        webhook_attempt(delivery_id=delivery.pk)
    old, new = rec.received
    assert rotated.secret != saved.secret
    assert old.signature_valid(saved.secret) and not new.signature_valid(saved.secret)
    assert new.signature_valid(rotated.secret)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_send_one_attempt(personas: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database that several threads can share (PostgreSQL)")
    env = make_environment("iris", "staging")
    with receiver(Answer(200, delay=0.5)) as rec:
        hook(env, personas, rec.url)
        [delivery] = webhooks_emit(environment=env, event="deployment.started")
        barrier = threading.Barrier(8)
        results: list[Any] = []

        def worker() -> None:
            try:
                barrier.wait()
                results.append(webhook_attempt(delivery_id=delivery.pk))
            finally:
                close_old_connections()
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(rec.received) == 1
    assert sum(1 for r in results if r is not None) == 1
    delivery.refresh_from_db()
    assert delivery.state == "succeeded" and delivery.attempts == 1
    assert delivery.log.count() == 1


# --- Configuration and its history ---------------------------------------------------


def test_configuration_changes_are_audited(env: Any, personas: Any) -> None:
    saved = hook(env, personas, "http://10.0.0.1/a", ["deployment.failed"])
    webhook_update(
        webhook=saved.webhook,
        url="http://10.0.0.2/a",
        events=["deployment.failed", "deployment.started"],
        active=True,
        actor=personas["admin"],
    )
    # Saving without a change records nothing.
    webhook_update(
        webhook=saved.webhook,
        url="http://10.0.0.2/a",
        events=["deployment.started", "deployment.failed"],
        active=True,
        actor=personas["admin"],
    )
    webhook_rotate_secret(webhook=saved.webhook, actor=personas["admin"])
    events = list(AuditEvent.objects.filter(object_type="webhook").order_by("id"))
    assert [e.action for e in events] == ["webhook_create", "webhook_update", "webhook_rotate"]
    assert all(
        (e.model_name, e.environment_name, e.actor_name) == ("iris", "staging", "admin")
        for e in events
    )
    changed = events[1].detail["changed"]
    assert changed["url"] == {"from": "http://10.0.0.1/a", "to": "http://10.0.0.2/a"}
    # Stored in the contract's order, whatever the order given.
    assert changed["events"]["to"] == ["deployment.started", "deployment.failed"]
    assert "whsec_" not in json.dumps([e.detail for e in events])


@pytest.mark.parametrize(
    ("events", "message"),
    [([], "at least one event"), (["deployment.done"], "unknown events")],
)
def test_bad_event_lists(env: Any, personas: Any, events: list[str], message: str) -> None:
    with pytest.raises(WebhookError, match=message) as refused:
        webhook_create(environment=env, url="http://10.0.0.1/", events=events, actor=None)
    assert refused.value.field == "events"
