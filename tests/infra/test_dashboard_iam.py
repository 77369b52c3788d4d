"""The dashboard's IAM policy (infra/base.yaml) is exactly what its code calls.

The static scan makes this independent of which tests ran; the calls really
made during the run are checked by test_recorded_calls.py (it runs last)."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from dashboard.aws.permissions import OPERATIONS, RESOURCES
from tools import dashboard_iam
from tools.cfn import default_context, load_template
from tools.dashboard_iam import (
    BASE_TEMPLATE,
    README,
    check_recorded,
    check_static,
    readme_block,
    readme_current,
    scan,
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(BASE_TEMPLATE)


@pytest.fixture(scope="module")
def calls() -> list[dashboard_iam.Call]:
    found, problems = scan()
    assert problems == []
    return found


def context(template: dict[str, Any]) -> Any:
    return default_context(template, ModelsBucket="modeldeck-models")


def statement(template: dict[str, Any], sid: str) -> dict[str, Any]:
    document = template["Resources"]["DashboardRole"]["Properties"]["Policies"][0]
    return next(s for s in document["PolicyDocument"]["Statement"] if s["Sid"] == sid)


def test_the_policy_allows_exactly_what_the_code_calls(template, calls) -> None:
    assert check_static(template, calls, context(template)) == []


def test_the_scan_finds_the_calls_the_code_makes(calls) -> None:
    found = {(c.service, c.operation) for c in calls}
    # One of each way of calling: a module's factory, a paginator, a presigned
    # URL, a factory defined outside dashboard/aws/ (the validation download).
    assert {
        ("s3", "PutObject"),
        ("s3", "ListObjectsV2"),
        ("s3", "UploadPart"),
        ("ssm", "PutParameter"),
        ("apprunner", "ListOperations"),
    } <= found
    validation = [c for c in calls if c.path == "dashboard/registry/validation.py"]
    assert {(c.service, c.operation) for c in validation} == {("s3", "GetObject")}


def test_a_call_the_policy_lacks_is_named_with_the_statement_to_add(template, calls) -> None:
    changed = copy.deepcopy(template)
    statement(changed, "Pointers")["Action"].remove("ssm:PutParameter")
    problems = check_static(changed, calls, context(changed))
    assert len(problems) == 1
    assert "calls ssm:PutParameter" in problems[0]
    assert "does not allow ssm:PutParameter on arn:aws:ssm:us-east-1:" in problems[0]
    assert "Action: ssm:PutParameter" in problems[0]
    assert 'Resource: !Sub "arn:${AWS::Partition}:ssm:' in problems[0]


def test_an_action_no_call_needs_is_refused(template, calls) -> None:
    changed = copy.deepcopy(template)
    statement(changed, "ReadWriteModels")["Action"].append("s3:DeleteObjectVersion")
    problems = check_static(changed, calls, context(changed))
    assert problems == [
        "statement ReadWriteModels allows s3:DeleteObjectVersion on "
        "arn:aws:s3:::modeldeck-models/models/*, which no call in dashboard/ needs: remove it"
    ]


def test_a_wider_resource_than_needed_is_refused(template, calls) -> None:
    changed = copy.deepcopy(template)
    statement(changed, "ReadWriteModels")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${ModelsBucket}/*"
    }
    problems = check_static(changed, calls, context(changed))
    assert problems and all("arn:aws:s3:::modeldeck-models/*, which no call" in p for p in problems)


def test_a_wildcard_action_is_refused(template, calls) -> None:
    changed = copy.deepcopy(template)
    statement(changed, "AppRunnerList")["Action"] = ["apprunner:*"]
    problems = check_static(changed, calls, context(changed))
    assert any("allows apprunner:* on *" in p for p in problems)


def test_rights_from_outside_the_inline_policy_are_refused(template) -> None:
    changed = copy.deepcopy(template)
    changed["Resources"]["DashboardRole"]["Properties"]["ManagedPolicyArns"] = [
        "arn:aws:iam::aws:policy/AmazonS3FullAccess"
    ]
    with pytest.raises(ValueError, match="inline policy only"):
        dashboard_iam.dashboard_policy(changed)


def test_the_scan_understands_each_way_of_calling_boto3(tmp_path: Path) -> None:
    (tmp_path / "fake.py").write_text(
        textwrap.dedent(
            """
            from typing import cast
            from dashboard.aws.clients import client

            def _logs():
                return cast("CloudWatchLogsClient", client("logs"))

            def read(kwargs):
                _logs().filter_log_events(logGroupName="g")
                ecs = client("ecs")
                ecs.describe_services(services=["s"], **kwargs)
                for page in _logs().get_paginator("describe_log_streams").paginate():
                    pass
                client("s3").generate_presigned_url(
                    "get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=60
                )
                _logs().meta.region_name
                _logs().no_such_operation()

            def nested():
                def inner():
                    cw = client("cloudwatch")
                    cw.get_metric_data(MetricDataQueries=[])
                return inner
            """
        )
    )
    calls, problems = scan(tmp_path)
    found = {(c.service, c.operation, c.keywords, c.any_keywords) for c in calls}
    assert found == {
        ("logs", "FilterLogEvents", frozenset({"logGroupName"}), False),
        ("ecs", "DescribeServices", frozenset({"services"}), True),
        ("logs", "DescribeLogStreams", frozenset(), True),
        ("s3", "GetObject", frozenset({"Bucket", "Key"}), False),
        ("cloudwatch", "GetMetricData", frozenset({"MetricDataQueries"}), False),
    }
    assert len(problems) == 1 and "logs.no_such_operation is not an operation" in problems[0]


def test_a_parameter_dependent_need_follows_the_call() -> None:
    # GetObject with a VersionId needs s3:GetObjectVersion; without one it does not.
    plain = dashboard_iam.Call("s3", "GetObject", "x.py", 1, frozenset({"Bucket", "Key"}), False)
    versioned = dashboard_iam.Call(
        "s3", "GetObject", "x.py", 1, frozenset({"Bucket", "Key", "VersionId"}), False
    )
    needs = OPERATIONS["s3:GetObject"]
    assert [n.action for n in needs if plain.applies(n)] == ["s3:GetObject"]
    assert [n.action for n in needs if versioned.applies(n)] == [
        "s3:GetObject",
        "s3:GetObjectVersion",
    ]


def test_every_known_operation_is_real_and_every_resource_kind_defined() -> None:
    session = botocore.session.get_session()
    for key, needs in OPERATIONS.items():
        service, operation = key.split(":")
        assert operation in session.get_service_model(service).operation_names, key
        for need in needs:
            assert need.resource in RESOURCES, key
            assert ":" in need.action and " " not in need.action, key


def test_recorded_calls_are_checked_on_what_they_touched(template, calls) -> None:
    ok = {"service": "s3", "operation": "GetObject", "sent": True}
    records = [
        {**ok, "params": {"Bucket": "test-models", "Key": "models/iris/1/model.pt"}},
        # Stubbed (never sent): the made-up names of a contract test are not checked.
        {**ok, "sent": False, "params": {"Bucket": "b", "Key": "k"}},
    ]
    assert check_recorded(template, records, calls, context(template)) == []
    outside = {**ok, "params": {"Bucket": "test-models", "Key": "elsewhere/x", "VersionId": True}}
    problems = check_recorded(template, [outside], calls, context(template))
    assert problems == [
        "s3:GetObject was called at run time on arn:aws:s3:::test-models/elsewhere/x: "
        "the dashboard role does not allow s3:GetObject there",
        "s3:GetObject was called at run time on arn:aws:s3:::test-models/elsewhere/x: "
        "the dashboard role does not allow s3:GetObjectVersion there",
    ]
    pointer = {"service": "ssm", "operation": "PutParameter", "sent": True}
    assert (
        check_recorded(
            template,
            [{**pointer, "params": {"Name": "/models/iris/prod"}}],
            calls,
            context(template),
        )
        == []
    )
    assert check_recorded(
        template, [{**pointer, "params": {"Name": "/other/iris"}}], calls, context(template)
    ) == [
        "ssm:PutParameter was called at run time on "
        "arn:aws:ssm:us-east-1:123456789012:parameter/other/iris: "
        "the dashboard role does not allow ssm:PutParameter there"
    ]


def test_a_recorded_call_the_scan_missed_is_reported(template, calls) -> None:
    record = {"service": "s3", "operation": "ListObjectVersions", "sent": False, "params": {}}
    problems = check_recorded(template, [record], calls, context(template))
    assert any("the static scan did not find it" in p for p in problems)
    assert any("does not allow s3:ListBucketVersions" in p for p in problems)


def test_the_readme_lists_the_template_policy(template) -> None:
    current = readme_current(README.read_text())
    assert current is not None, "README.md lost its generated IAM list"
    assert current == readme_block(template), (
        "README.md's IAM list is stale: python -m tools.dashboard_iam --write-readme"
    )


def test_calls_a_test_makes_itself_are_not_the_dashboards(template, calls) -> None:
    # A test deleting an exact object version "behind the dashboard's back" with
    # the dashboard's own client: the dashboard never does that, and may not.
    record = {
        "service": "s3",
        "operation": "DeleteObject",
        "sent": True,
        "params": {"Bucket": "test-models", "Key": "models/iris/1.0/model.pt", "VersionId": True},
    }
    by_test = {**record, "caller": "tests/dashboard/test_deployment_flow.py"}
    assert check_recorded(template, [by_test], calls, context(template)) == []
    by_dashboard = {**record, "caller": "dashboard/aws/s3.py"}
    assert check_recorded(template, [by_dashboard], calls, context(template)) == [
        "s3:DeleteObject was called at run time on "
        "arn:aws:s3:::test-models/models/iris/1.0/model.pt: "
        "the dashboard role does not allow s3:DeleteObjectVersion there"
    ]


def test_the_recorder_names_who_called_and_whether_it_was_sent() -> None:
    from botocore.stub import Stubber

    from dashboard.aws import s3
    from dashboard.aws.clients import client, reset_clients
    from tools.dashboard_iam import read_call_log

    reset_clients()
    stubber = Stubber(client("s3"))
    stubber.add_response("delete_object", {}, {"Bucket": "rec-b", "Key": "rec-k1"})
    stubber.add_response(
        "delete_object", {}, {"Bucket": "rec-b", "Key": "rec-k2", "VersionId": "v"}
    )
    with stubber:
        s3.delete_object(bucket="rec-b", key="rec-k1")
        client("s3").delete_object(Bucket="rec-b", Key="rec-k2", VersionId="v")
    reset_clients()
    import os

    records = read_call_log(Path(os.environ["MODELDECK_AWS_CALL_LOG"]))
    mine = {r["params"]["Key"]: r for r in records if r["params"].get("Bucket") == "rec-b"}
    assert mine["rec-k1"]["caller"] == "dashboard/aws/s3.py"
    assert mine["rec-k2"]["caller"] == "tests/infra/test_dashboard_iam.py"
    assert mine["rec-k2"]["params"]["VersionId"] is True  # present, value not kept
    assert not any(r["sent"] for r in mine.values())  # Stubber answered
