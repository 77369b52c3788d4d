"""Writes about webhooks: configuration, emitting events, delivering them.

Delivery is a small state machine in the database (see WebhookDelivery):
``webhooks_emit`` adds one row per subscribed webhook in the caller's
transaction and queues its first attempt on commit; ``webhook_attempt``
claims a due row with a conditional UPDATE, makes one HTTP request and
records it; the beat task ``webhooks_dispatch_due`` re-queues whatever is
due, so a lost queue message or a dead worker delays a delivery, never
loses it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from dashboard.audit.models import AuditEvent
from dashboard.audit.services import audit_record
from dashboard.deployments.models import Deployment, Environment
from dashboard.deployments.selectors import deployment_as_dict, deployment_get
from dashboard.webhooks.addresses import GuardedTransport, WebhookUrlError, check_url
from dashboard.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

# CONTRACT.md section 4.
EVENTS = (
    "deployment.started",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolled_back",
    "deployment.awaiting_approval",
    "drift.detected",
)
# Sent by the "send test" button only; never subscribed to.
PING = "ping"
SECRET_PREFIX = "whsec_"
USER_AGENT = "ModelDeck-Webhooks/1"
# Of a receiver's answer only this much is read (and a little of it kept).
RESPONSE_READ_BYTES = 64 * 1024
RESPONSE_KEEP_CHARS = 500
_BACKOFF_FACTOR = 4


class WebhookError(ValueError):
    """A webhook configuration that cannot be saved; ``field`` names the input."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def signature(secret: str, body: bytes) -> str:
    """The X-ModelDeck-Signature header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _allow_loopback() -> bool:
    return bool(settings.WEBHOOK_ALLOW_LOOPBACK)


def _clean(url: str, events: list[str]) -> tuple[str, list[str], str]:
    try:
        checked = check_url(url, allow_loopback=_allow_loopback())
    except WebhookUrlError as exc:
        raise WebhookError(str(exc), field="url") from None
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise WebhookError(f"unknown events: {', '.join(unknown)}", field="events")
    if not events:
        raise WebhookError("choose at least one event", field="events")
    # Stored in the contract's order, whatever order the form sent.
    return checked.url, [e for e in EVENTS if e in events], checked.note


@dataclass(frozen=True)
class WebhookSaved:
    webhook: Webhook
    note: str = ""  # e.g. the host does not resolve yet
    secret: str = ""  # only when just created or rotated


def webhook_create(
    *, environment: Environment, url: str, events: list[str], active: bool = True, actor: Any
) -> WebhookSaved:
    """Add a webhook with a new secret, returned here once and never again."""
    url, events, note = _clean(url, events)
    secret = _new_secret()
    with transaction.atomic():
        webhook = Webhook.objects.create(
            environment=environment,
            url=url,
            events=events,
            active=active,
            secret=secret,
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        _audit(
            actor, AuditEvent.Action.WEBHOOK_CREATE, webhook, {"events": events, "active": active}
        )
    return WebhookSaved(webhook=webhook, note=note, secret=secret)


def webhook_update(
    *, webhook: Webhook, url: str, events: list[str], active: bool, actor: Any
) -> WebhookSaved:
    url, events, note = _clean(url, events)
    changes = {
        field: {"from": getattr(webhook, field), "to": value}
        for field, value in (("url", url), ("events", events), ("active", active))
        if getattr(webhook, field) != value
    }
    if not changes:
        return WebhookSaved(webhook=webhook, note=note)
    with transaction.atomic():
        webhook.url, webhook.events, webhook.active = url, events, active
        webhook.save(update_fields=["url", "events", "active", "updated_at"])
        _audit(actor, AuditEvent.Action.WEBHOOK_UPDATE, webhook, {"changed": changes})
    return WebhookSaved(webhook=webhook, note=note)


def webhook_rotate_secret(*, webhook: Webhook, actor: Any) -> WebhookSaved:
    """Replace the secret. Deliveries still being retried are signed with
    the new one from their next attempt on."""
    secret = _new_secret()
    with transaction.atomic():
        webhook.secret = secret
        webhook.secret_rotated_at = timezone.now()
        webhook.save(update_fields=["secret", "secret_rotated_at", "updated_at"])
        _audit(actor, AuditEvent.Action.WEBHOOK_ROTATE, webhook, None)
    return WebhookSaved(webhook=webhook, secret=secret)


def webhook_delete(*, webhook: Webhook, actor: Any) -> None:
    """Remove a webhook with its deliveries and their log."""
    with transaction.atomic():
        _audit(actor, AuditEvent.Action.WEBHOOK_DELETE, webhook, {"events": webhook.events})
        webhook.delete()


def _audit(actor: Any, action: str, webhook: Webhook, detail: dict[str, Any] | None) -> None:
    audit_record(
        actor=actor,
        action=action,
        environment=webhook.environment,
        object_type="webhook",
        object_id=webhook.pk or "",
        object_repr=webhook.url[:200],
        detail=detail,
    )


# --- Emitting ------------------------------------------------------------------


def _body(
    *,
    event: str,
    delivery_id: uuid.UUID,
    sent_at: dt.datetime,
    deployment: dict[str, Any] | None,
    extra: dict[str, Any],
) -> str:
    document: dict[str, Any] = {
        "event": event,
        "delivery_id": str(delivery_id),
        "sent_at": sent_at,
        "deployment": deployment,
    }
    document.update(extra)
    # The same encoder as the API's (django-ninja's extends it), so the
    # deployment reads exactly as GET /api/deployments/<id> shows it.
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":"))


def _environment_ref(environment: Environment) -> dict[str, str]:
    return {"model": environment.model_name, "name": environment.name}


def _queue(deliveries: list[WebhookDelivery]) -> None:
    ids = [d.pk for d in deliveries]
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))


def _enqueue(ids: list[int]) -> None:
    from dashboard.webhooks.tasks import webhook_deliver

    for delivery_id in ids:
        try:
            webhook_deliver.delay(delivery_id)
        except Exception:  # the broker is down: the beat task picks the row up
            logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)


def webhooks_emit(
    *,
    environment: Environment,
    event: str,
    deployment: Deployment | None = None,
    extra: dict[str, Any] | None = None,
) -> list[WebhookDelivery]:
    """Record ``event`` for every active webhook of ``environment`` that
    subscribes to it, and queue the deliveries for after the commit.

    Call it inside the transaction that makes the change, after saving it:
    the body (``deployment`` as GET /api/deployments/<id> shows it, re-read
    from the database) is fixed now, and a rolled-back transaction sends
    nothing. For ``drift.detected``, ``deployment`` is the environment's last
    successful deployment (or None) and ``extra`` must carry ``drift`` (the
    contract's drift object); the body also names the ``environment``. Other
    keys of ``extra`` are added to the body; the contract's own keys cannot be
    overridden. Returns the new deliveries (none when nobody subscribes).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; use one of {', '.join(EVENTS)}")
    extra = dict(extra or {})
    clash = {"event", "delivery_id", "sent_at", "deployment"} & extra.keys()
    if clash:
        raise ValueError(f"extra must not set {', '.join(sorted(clash))}")
    if event == "drift.detected":
        if "drift" not in extra:
            raise ValueError("drift.detected needs extra={'drift': {...}}")
        extra.setdefault("environment", _environment_ref(environment))
    webhooks = [
        w
        for w in Webhook.objects.filter(environment=environment, active=True)
        if event in (w.events or [])
    ]
    if not webhooks:
        return []
    document = None
    if deployment is not None:
        fresh = deployment_get(deployment_id=deployment.pk)
        document = deployment_as_dict(fresh if fresh is not None else deployment)
    return _create_deliveries(
        webhooks, event=event, deployment=deployment, document=document, extra=extra
    )


def _create_deliveries(
    webhooks: list[Webhook],
    *,
    event: str,
    deployment: Deployment | None,
    document: dict[str, Any] | None,
    extra: dict[str, Any],
) -> list[WebhookDelivery]:
    now = timezone.now()
    deliveries = []
    for webhook in webhooks:
        delivery_id = uuid.uuid4()
        deliveries.append(
            WebhookDelivery(
                webhook=webhook,
                delivery_id=delivery_id,
                event=event,
                body=_body(
                    event=event,
                    delivery_id=delivery_id,
                    sent_at=now,
                    deployment=document,
                    extra=extra,
                ),
                deployment=deployment,
                state=WebhookDelivery.State.PENDING,
                next_attempt_at=now,
            )
        )
    with transaction.atomic():
        for delivery in deliveries:
            delivery.save(force_insert=True)
        _queue(deliveries)
    return deliveries


def webhook_send_test(*, webhook: Webhook) -> WebhookDelivery:
    """Queue a ``ping`` to ``webhook`` (active or not): the deployment is
    the environment's latest one, or null, and the body names the environment."""
    latest = (
        Deployment.objects.filter(environment=webhook.environment)
        .order_by("-created_at", "-id")
        .first()
    )
    document = None
    if latest is not None:
        fresh = deployment_get(deployment_id=latest.pk)
        document = deployment_as_dict(fresh) if fresh is not None else None
    [delivery] = _create_deliveries(
        [webhook],
        event=PING,
        deployment=latest,
        document=document,
        extra={"environment": _environment_ref(webhook.environment)},
    )
    return delivery


# --- Delivering ----------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    status_code: int | None
    error: str
    duration_ms: int
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempt: int) -> dt.timedelta:
    """How long after failed attempt number ``attempt`` (1-based) the next
    one is due: exponential, capped, with 10 % jitter so that receivers
    coming back up are not hit by every retry at once."""
    base = settings.WEBHOOK_RETRY_BASE_SECONDS * _BACKOFF_FACTOR ** max(0, attempt - 1)
    seconds = min(base, settings.WEBHOOK_RETRY_MAX_SECONDS)
    return dt.timedelta(seconds=seconds * random.uniform(0.9, 1.1))


def send(*, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
    """POST ``body`` once: no redirects followed, short timeouts, at most
    RESPONSE_READ_BYTES of the answer read, refused addresses never reached.
    Never raises for anything the network or the receiver does."""
    limit = settings.WEBHOOK_TIMEOUT_SECONDS
    timeout = httpx.Timeout(limit, connect=min(limit, 5.0))
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    excerpt = b""
    try:
        with (
            httpx.Client(
                transport=GuardedTransport(allow_loopback=_allow_loopback()),
                timeout=timeout,
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status_code = response.status_code
            for chunk in response.iter_raw():
                excerpt += chunk
                # A receiver trickling bytes would reset the read timeout
                # forever: the whole answer gets the same budget as one read.
                if len(excerpt) >= RESPONSE_READ_BYTES or time.monotonic() - started > 2 * limit:
                    break
    except httpx.TimeoutException as exc:
        error = f"timed out ({exc.__class__.__name__})"
    except httpx.HTTPError as exc:
        error = f"{exc.__class__.__name__}: {exc}"[:1000]
    if status_code is not None and not error and not (200 <= status_code < 300):
        error = f"the receiver answered {status_code}"
    if status_code is not None and 300 <= status_code < 400:
        error += " (redirects are not followed; configure the final URL)"
    return SendResult(
        status_code=status_code,
        error=error,
        duration_ms=int((time.monotonic() - started) * 1000),
        excerpt=excerpt[:RESPONSE_READ_BYTES].decode("utf-8", "replace")[:RESPONSE_KEEP_CHARS],
    )


def _claim_lease() -> dt.timedelta:
    # Longer than any one attempt can take (connect + write + the read budget).
    return dt.timedelta(seconds=4 * settings.WEBHOOK_TIMEOUT_SECONDS + 30)


def _due(now: dt.datetime) -> Q:
    return Q(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now) | Q(
        state=WebhookDelivery.State.SENDING, claimed_until__lt=now
    )


def webhook_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Make the next attempt of a delivery if it is due, and record it.

    Returns the delivery after the attempt, or None when there was nothing to
    do (not due, already done, taken by another worker, or gone). Safe to call
    any number of times, from any number of workers at once: the conditional
    UPDATE lets exactly one of them claim an attempt.
    """
    now = timezone.now()
    row = (
        WebhookDelivery.objects.select_related("webhook", "webhook__environment")
        .filter(pk=delivery_id)
        .filter(_due(now))
        .first()
    )
    if row is None:
        return None
    token = uuid.uuid4().hex
    claimed = WebhookDelivery.objects.filter(
        pk=row.pk, state=row.state, claim=row.claim, attempts=row.attempts
    ).update(
        state=WebhookDelivery.State.SENDING,
        claim=token,
        claimed_until=now + _claim_lease(),
        attempts=F("attempts") + 1,
    )
    if claimed != 1:
        return None
    if row.state == WebhookDelivery.State.SENDING:
        # The worker that claimed the previous attempt stopped before
        # recording it (killed, or lost its database connection).
        WebhookAttempt.objects.create(
            delivery=row,
            number=row.attempts,
            at=(row.claimed_until - _claim_lease()) if row.claimed_until else now,
            error="the worker stopped during this attempt; its result is unknown",
        )
    number = row.attempts + 1
    webhook = row.webhook
    if not webhook.active and row.event != PING:
        return _conclude(
            row,
            token,
            number,
            SendResult(None, "not sent: the webhook is switched off", 0, ""),
            attempted=False,
        )
    if number > settings.WEBHOOK_MAX_ATTEMPTS:
        return _conclude(
            row,
            token,
            number,
            SendResult(None, "not sent: no attempts left", 0, ""),
            attempted=False,
        )
    body = row.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-ModelDeck-Event": row.event,
        "X-ModelDeck-Delivery": str(row.delivery_id),
        "X-ModelDeck-Signature": signature(webhook.secret, body),
    }
    result = send(url=webhook.url, body=body, headers=headers)
    return _conclude(row, token, number, result, attempted=True)


def _conclude(
    row: WebhookDelivery, token: str, number: int, result: SendResult, *, attempted: bool
) -> WebhookDelivery:
    now = timezone.now()
    if attempted:
        WebhookAttempt.objects.create(
            delivery=row,
            number=number,
            at=now - dt.timedelta(milliseconds=result.duration_ms),
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error,
            response_excerpt=result.excerpt,
        )
    fields: dict[str, Any] = {
        "claim": "",
        "claimed_until": None,
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if result.ok:
        fields.update(state=WebhookDelivery.State.SUCCEEDED, finished_at=now, next_attempt_at=None)
    elif not attempted or number >= settings.WEBHOOK_MAX_ATTEMPTS:
        fields.update(state=WebhookDelivery.State.FAILED, finished_at=now, next_attempt_at=None)
    else:
        fields.update(
            state=WebhookDelivery.State.PENDING, next_attempt_at=now + retry_delay(number)
        )
    if not attempted:
        # Nothing was sent: the claim did not use up an attempt.
        fields["attempts"] = F("attempts") - 1
    updated = WebhookDelivery.objects.filter(pk=row.pk, claim=token).update(**fields)
    if updated != 1:
        logger.warning(
            "webhook delivery %s: attempt %s finished after its claim expired", row.pk, number
        )
    row.refresh_from_db()
    return row


def webhooks_dispatch_due(*, limit: int = 500) -> int:
    """Queue an attempt for every delivery that is due (the beat task).
    Returns how many were queued."""
    from dashboard.webhooks.selectors import webhook_deliveries_due

    ids = webhook_deliveries_due(now=timezone.now(), limit=limit)
    _enqueue(ids)
    return len(ids)
