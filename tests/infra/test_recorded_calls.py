"""Every AWS call the dashboard made during this test run (in this process and
in the stacks the e2e tests started) is allowed by its IAM policy, on the exact
bucket, key and parameter it touched. tests/conftest.py runs this file last and
points MODELDECK_AWS_CALL_LOG at a fresh file for the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.cfn import default_context, load_template
from tools.dashboard_iam import BASE_TEMPLATE, check_recorded, read_call_log, scan


def test_every_call_made_in_this_run_is_allowed() -> None:
    records = read_call_log(Path(os.environ["MODELDECK_AWS_CALL_LOG"]))
    if not records:
        pytest.skip("no test in this run called AWS through the dashboard's clients")
    template = load_template(BASE_TEMPLATE)
    calls, _ = scan()
    context = default_context(template, ModelsBucket="modeldeck-models")
    assert check_recorded(template, records, calls, context) == []
    # The record is real: the run reached AWS (moto or a stand-in), not only stubs.
    assert any(record["sent"] for record in records)
