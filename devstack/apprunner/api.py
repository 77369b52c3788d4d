"""App Runner's JSON 1.0 API (the operations ModelDeck uses), as an ASGI app.

Requests are ``POST /`` with ``X-Amz-Target: AppRunner.<Operation>`` and a JSON
body; answers and errors follow botocore's service model, so an unmodified
boto3 client works against it. Signatures are not checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import shlex
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.apprunner.service import InvalidStateError, Revision, Service

logger = logging.getLogger(__name__)

_CONTENT_TYPE = "application/x-amz-json-1.0"
_MAX_BODY_BYTES = 1024 * 1024


class ApiError(Exception):
    """An App Runner error answer: ``{"__type": code, "Message": message}``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidRequestException", message)


@cache
def service_model() -> ServiceModel:
    """Return botocore's App Runner model, the source of every shape used here."""
    return botocore.session.get_session().get_service_model("apprunner")


Handler = Callable[["AppRunnerApi", dict[str, Any]], dict[str, Any]]


class AppRunnerApi:
    """Serves the App Runner operations for a fixed set of services."""

    def __init__(self, services: Mapping[str, Service], *, ecs: Any = None) -> None:
        self._services = dict(services)  # by ARN, in configuration order
        # The ECS view of the same services (ecs_api.EcsExpressApi), answering
        # requests whose X-Amz-Target is ECS's.
        self._ecs = ecs

    def app(self) -> Starlette:
        """Return the ASGI application."""
        return Starlette(
            routes=[
                Route("/", self._dispatch, methods=["POST"]),
                Route("/_devstack/health", self._health, methods=["GET"]),
            ]
        )

    # -- HTTP -----------------------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        target = request.headers.get("x-amz-target") or ""
        if self._ecs is not None and target.startswith(self._ecs.prefix + "."):
            return await self._ecs.dispatch(request)
        try:
            name = _operation_name(target)
            handler = _HANDLERS.get(name)
            if handler is None:
                if name in service_model().operation_names:
                    supported = ", ".join(sorted(_HANDLERS))
                    raise _invalid(
                        f"Operation {name} is not supported by the local App Runner stand-in "
                        f"(supported: {supported})"
                    )
                raise _invalid(f"Unknown operation AppRunner.{name}")
            params = _parse_body(await _read_body(request))
            _validate(params, service_model().operation_model(name))
            result = handler(self, params)
        except ApiError as exc:
            return _error(exc, request_id)
        except Exception:
            logger.exception("App Runner stand-in failed on request %s", request_id)
            return _error(
                ApiError("InternalServiceErrorException", "An unexpected error occurred.", 500),
                request_id,
            )
        return Response(
            json.dumps(result),
            media_type=_CONTENT_TYPE,
            headers={"x-amzn-RequestId": request_id},
        )

    async def _health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "services": [
                    {"name": s.name, "arn": s.arn, "url": s.url, "status": s.status.value}
                    for s in self._services.values()
                ]
            }
        )

    # -- operations -------------------------------------------------------------

    def _service(self, arn: str) -> Service:
        service = self._services.get(arn)
        if service is None:
            raise ApiError("ResourceNotFoundException", f"Service {arn} does not exist.")
        return service

    def start_deployment(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self._service(params["ServiceArn"])
        try:
            operation = service.start_deployment()
        except InvalidStateError as exc:
            # StartDeployment's model lists no InvalidStateException: App
            # Runner answers a busy service with InvalidRequestException.
            raise _invalid(str(exc)) from exc
        return {"OperationId": operation.id}

    def update_service(self, params: dict[str, Any]) -> dict[str, Any]:
        service = self._service(params["ServiceArn"])
        revision = _revision(service, params)
        try:
            operation = service.update(revision)
        except InvalidStateError as exc:
            raise ApiError("InvalidStateException", str(exc)) from exc
        return {"Service": service.describe(), "OperationId": operation.id}

    def describe_service(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"Service": self._service(params["ServiceArn"]).describe()}

    def list_services(self, params: dict[str, Any]) -> dict[str, Any]:
        services = list(self._services.values())
        start = _decode_offset(params.get("NextToken"), len(services))
        limit = params.get("MaxResults") or len(services)
        page = services[start : start + limit]
        result: dict[str, Any] = {"ServiceSummaryList": [s.summary() for s in page]}
        if start + limit < len(services):
            result["NextToken"] = _encode({"offset": start + limit})
        return result

    def list_operations(self, params: dict[str, Any]) -> dict[str, Any]:
        operations = self._service(params["ServiceArn"]).operations()
        start = 0
        token = params.get("NextToken")
        if token:
            # Keyed on an operation id, not an offset: new operations are
            # prepended while a client pages through.
            after = _decode(token).get("from")
            ids = [operation.id for operation in operations]
            if not isinstance(after, str) or after not in ids:
                raise _invalid("NextToken is invalid or has expired.")
            start = ids.index(after)
        limit = params.get("MaxResults") or len(operations)
        page = operations[start : start + limit]
        result: dict[str, Any] = {"OperationSummaryList": [o.to_api() for o in page]}
        if start + limit < len(operations):
            result["NextToken"] = _encode({"from": operations[start + limit].id})
        return result


_HANDLERS: dict[str, Handler] = {
    "StartDeployment": AppRunnerApi.start_deployment,
    "UpdateService": AppRunnerApi.update_service,
    "DescribeService": AppRunnerApi.describe_service,
    "ListServices": AppRunnerApi.list_services,
    "ListOperations": AppRunnerApi.list_operations,
}


def _revision(service: Service, params: dict[str, Any]) -> Revision:
    """The revision an UpdateService request asks for. As in AWS, a
    SourceConfiguration replaces the whole source configuration: environment
    variables it leaves out are gone from the new revision."""
    current = service.revision
    source = params.get("SourceConfiguration")
    command, env, image = current.command, current.env, current.image_identifier
    if source is not None:
        if "CodeRepository" in source:
            raise _invalid(
                "The local App Runner stand-in runs image-based services only "
                "(SourceConfiguration.ImageRepository)."
            )
        repository = source.get("ImageRepository")
        if repository is None:
            raise _invalid("SourceConfiguration must have an ImageRepository.")
        configuration = repository.get("ImageConfiguration") or {}
        if configuration.get("RuntimeEnvironmentSecrets"):
            raise _invalid(
                "The local App Runner stand-in cannot resolve RuntimeEnvironmentSecrets."
            )
        env = dict(configuration.get("RuntimeEnvironmentVariables") or {})
        if "PORT" in env:
            raise _invalid("RuntimeEnvironmentVariables must not set PORT.")
        start = configuration.get("StartCommand")
        if start:
            try:
                command = tuple(shlex.split(start))
            except ValueError as exc:
                raise _invalid(f"StartCommand cannot be parsed: {exc}") from exc
            if not command:
                raise _invalid("StartCommand is empty.")
        image = repository.get("ImageIdentifier", image)
    path = current.health_check_path
    health = params.get("HealthCheckConfiguration")
    if health is not None:
        if health.get("Protocol", "TCP") == "HTTP":
            path = health.get("Path") or "/"
        else:
            path = "/"
    return Revision(command=command, env=env, health_check_path=path, image_identifier=image)


def _operation_name(target: str | None) -> str:
    if not target:
        raise _invalid("Missing X-Amz-Target header (expected AppRunner.<Operation>).")
    prefix, _, name = target.partition(".")
    if prefix != service_model().metadata["targetPrefix"] or not name:
        raise _invalid(f"Unknown operation {target}")
    return name


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY_BYTES:
            raise _invalid(f"Request body is larger than {_MAX_BODY_BYTES} bytes.")
    return bytes(body)


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"Malformed JSON request body: {exc}") from exc
    if not isinstance(params, dict):
        raise _invalid("The JSON request body must be an object.")
    return params


def _validate(params: dict[str, Any], operation: OperationModel) -> None:
    """Check ``params`` against the operation's input shape, in place.

    Unknown members are dropped, as AWS ignores them for forward compatibility.
    Raises ApiError (InvalidRequestException) naming every problem found.
    """
    shape = operation.input_shape
    if shape is None:
        params.clear()
        return
    assert isinstance(shape, StructureShape)
    for key in list(params):
        if key not in shape.members:
            del params[key]
    report = ParamValidator().validate(params, shape)
    problems = report.generate_report().splitlines() if report.has_errors() else []
    if not problems:
        # botocore's validator checks types and minimums; AWS also enforces these.
        for key, value in params.items():
            problems.extend(_constraint_problems(key, value, shape.members[key]))
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise _invalid(f"{count} validation {noun} detected: " + "; ".join(problems))


def _constraint_problems(name: str, value: Any, shape: Shape) -> list[str]:
    meta = shape.metadata
    problems: list[str] = []
    if shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                f"Value at '{name}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        pattern = meta.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            problems.append(
                f"Value {value!r} at '{name}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )
        allowed = meta.get("enum")
        if allowed and value not in allowed:
            problems.append(
                f"Value {value!r} at '{name}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: {allowed}"
            )
    if shape.type_name == "integer" and isinstance(value, int):
        if "max" in meta and value > meta["max"]:
            problems.append(
                f"Value {value} at '{name}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )
    return problems


def _encode(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def _decode(token: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _invalid("NextToken is invalid or has expired.") from exc
    if not isinstance(payload, dict):
        raise _invalid("NextToken is invalid or has expired.")
    return payload


def _decode_offset(token: str | None, size: int) -> int:
    if not token:
        return 0
    offset = _decode(token).get("offset")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= size:
        raise _invalid("NextToken is invalid or has expired.")
    return offset


def _error(error: ApiError, request_id: str) -> Response:
    return Response(
        json.dumps({"__type": error.code, "Message": error.message}),
        status_code=error.status,
        media_type=_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": error.code},
    )
