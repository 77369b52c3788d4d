"""Security policy that the settings apply before Django starts: which secret
keys production refuses, and which peers count as trusted reverse proxies.

Pure functions (no Django imports) so that ``dashboard/settings.py`` can call
them while it is being read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# Django's own `check --deploy` wants at least 50 characters and 5 distinct ones;
# a key that meets the letter of that but is one repeated pattern is no secret.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_DISTINCT = 12

# Keys that were ever written down in this repository or its docs, and the
# shapes placeholders take. A key made by `secrets.token_urlsafe(50)` contains
# none of these words (the odds are far below one in a billion).
KNOWN_SECRET_KEYS = frozenset(
    {
        "modeldeck-development-secret-key-do-not-use-in-production",
        "compose-local-secret-key-change-me-0123456789abcdef",
    }
)
PLACEHOLDER_MARKERS = (
    "django-insecure",
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "do-not-use",
    "not-a-secret",
    "placeholder",
    "example",
    "secret-key",
    "secret_key",
    "insecure",
    "development",
    "your-secret",
    "xxxxxxxx",
    "01234567",
)


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` must not sign production sessions, or None when it may."""
    lowered = key.lower()
    if key in KNOWN_SECRET_KEYS:
        return "it is a key published in this repository (the development or compose default)"
    marker = next((m for m in PLACEHOLDER_MARKERS if m in lowered), None)
    if marker is not None:
        return f"it looks like a placeholder (contains {marker!r})"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"it is {len(key)} characters long; at least {SECRET_KEY_MIN_LENGTH} are needed"
    if len(set(key)) < SECRET_KEY_MIN_DISTINCT:
        return (
            f"it uses only {len(set(key))} distinct characters; "
            f"a random key has far more than {SECRET_KEY_MIN_DISTINCT}"
        )
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.0/8``, ``::1``) as networks.

    Raises ValueError naming the item that is neither.
    """
    networks: list[Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
    return tuple(networks)


def address_in(address: str, networks: Iterable[Network]) -> bool:
    """Whether ``address`` (a text IP, maybe IPv4-mapped IPv6) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)
