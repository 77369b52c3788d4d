"""The deployment page's progress bar: where a deployment is, or where it ended."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dashboard.deployments.models import Deployment
from dashboard.deployments.views import _stages

T = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def bar(**fields: Any) -> list[tuple[str, str]]:
    return [(s["label"], s["state"]) for s in _stages(Deployment(**fields))]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"status": "pending"},
            [("Queued", "current"), ("Deploying", "todo"), ("Verifying", "todo"), ("Live", "todo")],
        ),
        (
            {"status": "verifying", "started_at": T, "live_at": T},
            [("Queued", "done"), ("Deploying", "done"), ("Verifying", "current"), ("Live", "todo")],
        ),
        (
            {"status": "succeeded", "started_at": T, "live_at": T},
            [("Queued", "done"), ("Deploying", "done"), ("Verifying", "done"), ("Live", "done")],
        ),
        # Found by QA: a rejected request showed Queued as done and "Rejected"
        # in the Deploying slot; it never left the approval.
        (
            {"status": "rejected", "approved_by_name": "bob"},
            [
                ("Rejected", "failed"),
                ("Queued", "todo"),
                ("Deploying", "todo"),
                ("Verifying", "todo"),
                ("Live", "todo"),
            ],
        ),
        # Stopped before its traffic moved: it failed while deploying.
        (
            {"status": "rolled_back", "started_at": T},
            [
                ("Queued", "done"),
                ("Rolled Back", "failed"),
                ("Verifying", "todo"),
                ("Live", "todo"),
            ],
        ),
        (
            {"status": "failed", "started_at": T, "live_at": T},
            [("Queued", "done"), ("Deploying", "done"), ("Failed", "failed"), ("Live", "todo")],
        ),
    ],
)
def test_the_bar_shows_where_a_deployment_is_or_ended(
    fields: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert bar(**fields) == expected
