"""Template filters for deployment pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def sha(value: object) -> str:
    """A SHA-256 shortened for display (the full one goes in a title)."""
    text = str(value or "")
    return f"{text[:12]}…" if len(text) > 12 else (text or "—")
