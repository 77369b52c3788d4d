"""The webhooks page of an environment: admins add, change, rotate, test and
remove webhooks; the secret is shown once; every attempt is in the log."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from dashboard.audit.models import AuditEvent
from dashboard.deployments.models import Deployment
from dashboard.webhooks.models import Webhook, WebhookDelivery
from dashboard.webhooks.services import EVENTS, webhook_attempt, webhook_create, webhooks_emit
from tests.dashboard.factories import make_environment
from tests.dashboard.webhook_receiver import receiver

pytestmark = pytest.mark.django_db

PAGE = "/models/iris/environments/staging/webhooks/"


@pytest.fixture
def env(personas: Any) -> Any:
    return make_environment("iris", "staging")


@pytest.fixture
def admin(personas: Any) -> Client:
    client = Client()
    client.force_login(personas["admin"])
    return client


def test_adding_shows_the_secret_once(admin: Client, env: Any) -> None:
    response = admin.post(
        PAGE, {"url": "http://10.0.0.1/hook", "events": ["deployment.failed"], "active": "on"}
    )
    assert response.status_code == 201
    webhook = Webhook.objects.get()
    html = response.content.decode()
    assert 'id="new-secret"' in html and webhook.secret in html
    assert response["Cache-Control"] == "no-store"
    assert (webhook.url, webhook.events, webhook.active) == (
        "http://10.0.0.1/hook",
        ["deployment.failed"],
        True,
    )
    again = admin.get(PAGE).content.decode()
    assert webhook.secret not in again and webhook.secret_hint in again
    event = AuditEvent.objects.get(action="webhook_create")
    assert (event.actor_name, event.object_repr) == ("admin", "http://10.0.0.1/hook")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "http://169.254.169.254/latest", "events": ["deployment.failed"]}, "metadata"),
        ({"url": "gopher://10.0.0.1/", "events": ["deployment.failed"]}, "http:// or https://"),
        ({"url": "http://10.0.0.1/", "events": ["deployment.nope"]}, "not one of the available"),
        ({"url": "http://10.0.0.1/"}, "This field is required"),
    ],
)
def test_bad_input_is_refused_with_the_reason(
    admin: Client, env: Any, data: dict[str, Any], message: str
) -> None:
    response = admin.post(PAGE, data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Webhook.objects.exists() and not AuditEvent.objects.exists()


def test_change_rotate_remove(admin: Client, env: Any, personas: Any) -> None:
    saved = webhook_create(
        environment=env, url="http://10.0.0.1/a", events=list(EVENTS), actor=personas["admin"]
    )
    webhook = saved.webhook
    changed = admin.post(
        f"{PAGE}{webhook.pk}/update", {"url": "http://10.0.0.2/b", "events": ["drift.detected"]}
    )
    assert changed.status_code == 302
    webhook.refresh_from_db()
    assert (webhook.url, webhook.events, webhook.active) == (
        "http://10.0.0.2/b",
        ["drift.detected"],
        False,
    )
    refused = admin.post(
        f"{PAGE}{webhook.pk}/update",
        {"url": "http://[fd00:ec2::254]/", "events": ["drift.detected"]},
        follow=True,
    )
    assert "not changed" in refused.content.decode() and "metadata" in refused.content.decode()
    webhook.refresh_from_db()
    assert webhook.url == "http://10.0.0.2/b"

    rotated = admin.post(f"{PAGE}{webhook.pk}/rotate")
    assert rotated.status_code == 200
    webhook.refresh_from_db()
    assert webhook.secret != saved.secret and webhook.secret in rotated.content.decode()
    assert webhook.secret_rotated_at is not None

    removed = admin.post(f"{PAGE}{webhook.pk}/delete")
    assert removed.status_code == 302 and not Webhook.objects.exists()
    assert list(
        AuditEvent.objects.filter(object_type="webhook")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["webhook_create", "webhook_update", "webhook_rotate", "webhook_delete"]


def test_send_test_and_the_delivery_log(admin: Client, env: Any, personas: Any) -> None:
    with receiver(500, 200) as rec:
        saved = webhook_create(
            environment=env, url=rec.url, events=list(EVENTS), actor=personas["admin"]
        )
        response = admin.post(f"{PAGE}{saved.webhook.pk}/test")
        assert response.status_code == 302
        ping = WebhookDelivery.objects.get(event="ping")
        # While a delivery is on its way the log polls; htmx stops it with 286.
        fragment = admin.get(f"{PAGE}?fragment=deliveries", headers={"HX-Request": "true"})
        assert fragment.status_code == 200 and 'hx-trigger="every 2s"' in fragment.content.decode()
        webhook_attempt(delivery_id=ping.pk)
        WebhookDelivery.objects.filter(pk=ping.pk).update(next_attempt_at=ping.created_at)
        webhook_attempt(delivery_id=ping.pk)
    assert rec.received[0].signature_valid(saved.secret)
    html = admin.get(PAGE).content.decode()
    assert str(ping.delivery_id) in html
    assert "the receiver answered 500" in html
    assert html.count('class="attempt"') == 2
    done = admin.get(f"{PAGE}?fragment=deliveries", headers={"HX-Request": "true"})
    assert done.status_code == 286


def test_deployment_deliveries_link_their_deployment(
    admin: Client, env: Any, personas: Any
) -> None:
    webhook_create(environment=env, url="http://10.0.0.1/", events=list(EVENTS), actor=None)
    deployment = Deployment.objects.create(
        environment=env, to_version="1.0", pointer={}, status="pending"
    )
    webhooks_emit(environment=env, event="deployment.started", deployment=deployment)
    assert f'href="/deployments/{deployment.pk}/"' in admin.get(PAGE).content.decode()


def test_unknown_environment_or_webhook_is_404(admin: Client, env: Any, personas: Any) -> None:
    assert admin.get("/models/iris/environments/nope/webhooks/").status_code == 404
    other = make_environment("iris", "production")
    saved = webhook_create(
        environment=other, url="http://10.0.0.1/", events=list(EVENTS), actor=None
    )
    # A webhook is reached only through its own environment.
    assert admin.post(f"{PAGE}{saved.webhook.pk}/delete").status_code == 404
    assert admin.post(f"{PAGE}99999/rotate").status_code == 404
    assert Webhook.objects.count() == 1


def test_wrong_methods(admin: Client, env: Any) -> None:
    assert admin.put(PAGE).status_code == 405
    assert admin.get(f"{PAGE}1/delete").status_code == 405


def test_model_page_links_history_and_webhooks(aws: str, env: Any, personas: Any) -> None:
    history = 'href="/audit/?model=iris&amp;environment=staging"'
    client = Client()
    client.force_login(personas["admin"])
    html = client.get("/models/iris/").content.decode()
    assert history in html and f'href="{PAGE}"' in html
    client.force_login(personas["deployer"])
    html = client.get("/models/iris/").content.decode()
    assert history in html and f'href="{PAGE}"' not in html
