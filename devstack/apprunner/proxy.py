"""The stable URL of a service: an ASGI reverse proxy to its current instance."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx

from devstack.apprunner.instance import Instance
from devstack.apprunner.service import Service

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any  # Callable[[], Awaitable[Message]]
Send = Any  # Callable[[Message], Awaitable[None]]

# RFC 9110 7.6.1: connection-specific headers are not forwarded.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}


class RequestObserver(Protocol):
    """Told about every request the stable URL answers (App Runner's request
    metrics): called on the event loop, so it must only count, never block."""

    def request_started(self, service: str) -> None: ...

    def request_finished(self, service: str, status: int, seconds: float) -> None: ...


class _ClientDisconnected(Exception):
    """The client went away while its request body was being forwarded."""


class ServiceProxy:
    """Forwards every HTTP request to the service's current instance.

    The instance is chosen, and counted as busy, in one synchronous step when
    the request arrives, so a swap either routes the request to the new
    instance or keeps the old one alive until the request has been answered.
    Bodies stream in both directions with ASGI back-pressure, never buffered whole.
    """

    def __init__(self, service: Service, observer: RequestObserver | None = None) -> None:
        self._service = service
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # websockets are disabled on the server; lifespan is off
        observer = self._observer
        if observer is None:
            await self._handle(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        observer.request_started(self._service.name)
        try:
            await self._handle(scope, receive, observed)
        finally:
            # No status: the client left before an answer (nginx's 499).
            observer.request_finished(
                self._service.name, status or 499, time.perf_counter() - started
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self._service.routable_instance()
        if instance is None:
            await _plain(
                send, 503, f"service {self._service.name} has no healthy instance right now\n"
            )
            return
        with instance.track_request():
            await self._forward(instance, scope, receive, send)

    async def _forward(
        self, instance: Instance, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in _HOP_BY_HOP and k.lower() != b"x-forwarded-for"
        ]
        forwarded_for = [v for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"]
        client = scope.get("client")
        if client:
            forwarded_for.append(str(client[0]).encode("latin-1"))
        if forwarded_for:
            headers.append((b"x-forwarded-for", b", ".join(forwarded_for)))
        headers.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode("latin-1")))
        content: AsyncIterator[bytes] | None = None
        if _has_body(scope["headers"]):
            content = _request_body(receive)
        elif any(k.lower() == b"transfer-encoding" for k, _ in scope["headers"]):
            # A chunked body: forward it chunked (httpx does so for an iterator).
            content = _request_body(receive)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string") or b""
        url = httpx.URL(
            scheme="http",
            host="127.0.0.1",
            port=instance.port,
            raw_path=raw_path + (b"?" + query if query else b""),
        )
        request = instance.client.build_request(
            scope["method"], url, headers=headers, content=content
        )
        try:
            response = await instance.client.send(request, stream=True)
        except _ClientDisconnected:
            return
        except httpx.HTTPError as exc:
            await _plain(
                send, 502, f"instance {instance.id} did not answer: {type(exc).__name__}\n"
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Headers are gone already; closing the connection is all that is left.
            logger.warning("instance %s broke off a response: %r", instance.id, exc)
        finally:
            await response.aclose()


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key.lower() == b"content-length":
            return value.strip() != b"0"
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientDisconnected
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
