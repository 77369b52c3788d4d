"""Checks for what an admin types about an environment: its name, the SSM
parameter holding its pointer, its App Runner service and its URL.

Each ``validate_*`` raises Django's ValidationError with a message that names
the rule, so forms (the admin, the environment settings page) and services can
use them alike. ``service_url_problem`` is the same URL check as a plain
function, for code that must not raise (the live check).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from dashboard.registry.names import InvalidName
from dashboard.registry.names import validate_environment_name as _environment_name

# --- Names ----------------------------------------------------------------


def validate_environment_name(value: str) -> str:
    """Lowercase letters, digits and '-', 1-32 characters (it is part of URLs,
    of the pointer's parameter name and of App Runner service names)."""
    try:
        return _environment_name(value)
    except InvalidName as exc:
        raise ValidationError(str(exc), code="invalid_environment_name") from exc


# --- SSM parameter names (AWS's rules) ---------------------------------------
# https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-paramstore-su-create.html
_SSM_CHARS = re.compile(r"[A-Za-z0-9_.\-/]+", re.ASCII)
SSM_MAX_LEVELS = 15
# The limit counts the whole ARN: arn:aws:ssm:<region>:<account>:parameter/<name>
SSM_MAX_ARN_LENGTH = 1011
_ACCOUNT_ID_LENGTH = 12


def validate_ssm_parameter_name(value: str) -> str:
    """A Parameter Store name AWS accepts for a standard String parameter:
    letters, digits, '_', '.', '-' and '/'; a hierarchy starts with '/', has no
    empty level and at most 15 levels; no level-one name starting with "aws"
    or "ssm" (reserved by AWS); the ARN it makes at most 1011 characters. No
    version or label selector (':7'): the dashboard writes the parameter."""
    if not isinstance(value, str) or not value:
        raise ValidationError("the SSM parameter name is required", code="invalid_ssm_name")
    if not _SSM_CHARS.fullmatch(value):
        raise ValidationError(
            "an SSM parameter name may only contain letters, digits, '_', '.', '-' and '/' "
            "(no spaces, and no ':' version selector: the dashboard writes the parameter)",
            code="invalid_ssm_name",
        )
    if "/" in value and not value.startswith("/"):
        raise ValidationError(
            "an SSM parameter name with levels must start with '/', e.g. /models/iris/production",
            code="invalid_ssm_name",
        )
    levels = value.strip("/").split("/")
    if value.endswith("/") or "" in levels:
        raise ValidationError(
            "an SSM parameter name has no empty level ('//') and does not end with '/'",
            code="invalid_ssm_name",
        )
    if len(levels) > SSM_MAX_LEVELS:
        raise ValidationError(
            f"an SSM parameter name has at most {SSM_MAX_LEVELS} levels", code="invalid_ssm_name"
        )
    if levels[0].lower().startswith(("aws", "ssm")):
        raise ValidationError(
            "SSM parameter names starting with 'aws' or 'ssm' are reserved by AWS",
            code="invalid_ssm_name",
        )
    prefix = f"arn:aws:ssm:{settings.AWS_REGION}:{'0' * _ACCOUNT_ID_LENGTH}:parameter"
    arn_length = len(prefix) + (0 if value.startswith("/") else 1) + len(value)
    if arn_length > SSM_MAX_ARN_LENGTH:
        raise ValidationError(
            f"the SSM parameter name is too long: its ARN would be {arn_length} characters, "
            f"AWS allows {SSM_MAX_ARN_LENGTH}",
            code="invalid_ssm_name",
        )
    return value


# --- App Runner service ARNs ---------------------------------------------------
_SERVICE_ARN_RE = re.compile(
    r"arn:aws[a-z-]*:apprunner:[a-z0-9-]+:\d{12}:service/[A-Za-z0-9][A-Za-z0-9_-]{3,39}/[0-9a-f]{32}",
    re.ASCII,
)


def validate_service_arn(value: str) -> str:
    """An App Runner service ARN: arn:aws:apprunner:<region>:<account>:service/<name>/<id>."""
    if not isinstance(value, str) or not _SERVICE_ARN_RE.fullmatch(value):
        raise ValidationError(
            "not an App Runner service ARN (arn:aws:apprunner:<region>:<account>:"
            "service/<name>/<32 hex id>)",
            code="invalid_service_arn",
        )
    return value


_ECS_SERVICE_ARN_RE = re.compile(
    r"arn:aws[a-z-]*:ecs:[a-z]{2}(-[a-z]+)+-\d:\d{12}:service/[A-Za-z0-9_-]{1,255}/[A-Za-z0-9_-]{1,255}",
    re.ASCII,
)


def validate_target_arn(target: str, value: str) -> str:
    """The service ARN an environment's deploy target names: an App Runner
    service, or an ECS service (an Express Mode service is an ECS service)."""
    if target in {"ecs", "ecs_express"}:
        if not isinstance(value, str) or not _ECS_SERVICE_ARN_RE.fullmatch(value):
            raise ValidationError(
                "not an ECS service ARN (arn:aws:ecs:<region>:<account>:service/<cluster>/<name>)",
                code="invalid_service_arn",
            )
        return value
    return validate_service_arn(value)


def validate_target_url(target: str, service_url: str) -> str:
    """A classic ECS service needs its base URL: ECS reports none for it (its
    load balancer is configured elsewhere), while App Runner and ECS Express
    Mode report the URL they serve on."""
    if target == "ecs" and not service_url:
        raise ValidationError(
            "an ECS service (not Express Mode) needs its service URL: ECS does not report "
            "where a classic service is reachable (its load balancer's URL, e.g. "
            "https://iris.example.com)",
            code="service_url_required",
        )
    return service_url


# --- Service URLs -------------------------------------------------------------
# Where a cloud's instance metadata (and its credentials) answer. Link-local
# covers 169.254.169.254 and fe80::/10; these are the rest.
_METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}


def _address_problem(address: str, *, production: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES or ip.is_link_local:
        return f"{ip} is a link-local or instance-metadata address"
    if ip.is_loopback:
        # Fine for the local stack; in production "this machine" is the dashboard.
        return f"{ip} is this machine (loopback), not a service" if production else None
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{ip} is not a service address"
    return None


def service_url_problem(
    value: str, *, production: bool | None = None, resolve: bool = True
) -> str | None:
    """Why ``value`` is not an acceptable base URL of an inference service,
    or None. https only in production; never a link-local or metadata
    address (nor a name that resolves to one), no loopback in production, no
    credentials, query or fragment in the URL."""
    production = settings.PRODUCTION if production is None else production
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "not a URL"
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        return "the service URL must use https" + ("" if production else " or http")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the service URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the service URL must not carry a user name or password"
    if parts.query or parts.fragment:
        return "the service URL is a base URL: no query or fragment"
    if host in _METADATA_HOSTS:
        return f"{host} is an instance-metadata service, not an inference service"
    if production and (host == "localhost" or host.endswith(".localhost")):
        return f"{host} is this machine (loopback), not a service"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal:
        return _address_problem(host, production=production)
    if resolve:
        try:
            infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return None  # not resolvable (yet): the live check will say so
        for info in infos:
            problem = _address_problem(str(info[4][0]), production=production)
            if problem:
                return f"{host} resolves to {problem}"
    return None


def validate_service_url(value: str) -> str:
    """Django validator form of :func:`service_url_problem`."""
    problem = service_url_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_service_url")
    return value
