"""Fuzzing with schemathesis against the services' own OpenAPI documents,
on the running local stack: no input may produce a 5xx.

Only "not a server error" is checked: the documents describe the happy
shapes, and every 4xx is tested with its message elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.conftest import LocalStack

pytestmark = pytest.mark.e2e

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure reproduces
)


@pytest.fixture
def inference_schema(local_stack: LocalStack) -> Any:
    return schemathesis.openapi.from_url(f"{local_stack.staging}/openapi.json")


@pytest.fixture
def dashboard_schema(local_stack: LocalStack) -> Any:
    schema = schemathesis.openapi.from_url(
        f"{local_stack.dashboard}/api/schema",
        headers={"Authorization": f"Token {local_stack.api_token('viewer')}"},
    )
    # Rollback and upload completion would change the shared stack's state
    # for the other tests; their validation is tested case by case.
    return schema.exclude(path_regex=r"/(rollback|complete)$")


def fuzz(schema: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Run every operation of ``schema`` through Hypothesis; return the ones fuzzed."""
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error])

        run()
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    return fuzzed


def test_inference_never_answers_5xx(inference_schema: Any, local_stack: LocalStack) -> None:
    fuzzed = fuzz(inference_schema, local_stack.staging, {})
    assert "POST /predict" in fuzzed


def test_dashboard_api_never_answers_5xx(dashboard_schema: Any, local_stack: LocalStack) -> None:
    key = local_stack.api_token("deployer")
    fuzzed = fuzz(dashboard_schema, local_stack.dashboard, {"Authorization": f"Token {key}"})
    assert "POST /api/models/{model}/environments/{environment}/promote" in fuzzed
    assert "POST /api/models/{model}/uploads" in fuzzed
