"""Contract tests of every CloudWatch and CloudWatch Logs call the dashboard
makes, checked by botocore's Stubber against AWS's own service models:
percentile statistics, metric math and paging of GetMetricData, which moto
does not implement, are pinned down here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from botocore.stub import Stubber

from dashboard.aws import cloudwatch, logs
from dashboard.aws.clients import client, reset_clients
from dashboard.aws.cloudwatch import AlarmSpec, MetricQuery, MetricStat
from dashboard.aws.errors import AwsNotFoundError, AwsTransientError

T0 = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
DIMS = (("ServiceName", "iris-staging"), ("ServiceID", "0123456789abcdef0123456789abcdef"))
API_DIMS = [{"Name": k, "Value": v} for k, v in DIMS]


@pytest.fixture(autouse=True)
def _no_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_clients()
    yield
    reset_clients()


def stub(service: str) -> Stubber:
    stubber = Stubber(client(service))
    stubber.activate()
    return stubber


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def stat_query(qid: str, name: str, stat: str) -> MetricQuery:
    return MetricQuery(
        id=qid,
        stat=MetricStat(
            namespace="AWS/AppRunner", metric_name=name, dimensions=DIMS, stat=stat, period=60
        ),
    )


def api_stat(qid: str, name: str, stat: str) -> dict[str, object]:
    return {
        "Id": qid,
        "ReturnData": True,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/AppRunner", "MetricName": name, "Dimensions": API_DIMS},
            "Period": 60,
            "Stat": stat,
        },
    }


def test_get_metric_data_percentiles_and_metric_math_in_one_call() -> None:
    stubber = stub("cloudwatch")
    queries = [
        stat_query("q0", "Requests", "Sum"),
        stat_query("q1", "5xxStatusResponses", "Sum"),
        stat_query("q2", "RequestLatency", "p99"),
        stat_query("q3", "RequestLatency", "p99.9"),
        MetricQuery(id="rate", expression="100 * q1 / q0", label="5xx %", period=60),
    ]
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "q0",
                    "Label": "Requests",
                    "Timestamps": [at(0), at(1)],
                    "Values": [10.0, 20.0],
                    "StatusCode": "Complete",
                },
                {
                    "Id": "q1",
                    "Label": "5xx",
                    "Timestamps": [at(1)],
                    "Values": [5.0],
                    "StatusCode": "Complete",
                },
                {
                    "Id": "q2",
                    "Label": "p99",
                    "Timestamps": [at(1), at(0)],
                    "Values": [120.5, 80.0],
                    "StatusCode": "Complete",
                },
                {
                    "Id": "q3",
                    "Label": "p99.9",
                    "Timestamps": [],
                    "Values": [],
                    "StatusCode": "Complete",
                },
                {
                    "Id": "rate",
                    "Label": "5xx %",
                    "Timestamps": [at(1)],
                    "Values": [25.0],
                    "StatusCode": "Complete",
                },
            ],
            "Messages": [],
        },
        {
            "MetricDataQueries": [
                api_stat("q0", "Requests", "Sum"),
                api_stat("q1", "5xxStatusResponses", "Sum"),
                api_stat("q2", "RequestLatency", "p99"),
                api_stat("q3", "RequestLatency", "p99.9"),
                {
                    "Id": "rate",
                    "ReturnData": True,
                    "Expression": "100 * q1 / q0",
                    "Period": 60,
                    "Label": "5xx %",
                },
            ],
            "StartTime": at(0),
            "EndTime": at(2),
            "ScanBy": "TimestampAscending",
        },
    )
    result = cloudwatch.get_metric_data(queries=queries, start=at(0), end=at(2))
    stubber.assert_no_pending_responses()
    assert result.calls == 1
    assert result.series["q0"].values == [10.0, 20.0]
    # Whatever order a page used, series come back oldest first.
    assert result.series["q2"].points() == [(at(0), 80.0), (at(1), 120.5)]
    assert result.series["rate"].values == [25.0]
    assert result.series["q3"].values == []


def test_get_metric_data_follows_next_token_and_merges_pages() -> None:
    stubber = stub("cloudwatch")
    request = {
        "MetricDataQueries": [
            api_stat("q0", "Requests", "Sum"),
            api_stat("q1", "RequestLatency", "p50"),
        ],
        "StartTime": at(0),
        "EndTime": at(10),
        "ScanBy": "TimestampAscending",
        "MaxDatapoints": 4,
    }
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "q0",
                    "Label": "Requests",
                    "Timestamps": [at(0), at(1), at(2)],
                    "Values": [1.0, 2.0, 3.0],
                    "StatusCode": "PartialData",
                },
                {
                    "Id": "q1",
                    "Label": "p50",
                    "Timestamps": [at(0)],
                    "Values": [9.0],
                    "StatusCode": "PartialData",
                },
            ],
            "NextToken": "page-2",
        },
        request,
    )
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "q0",
                    "Label": "Requests",
                    "Timestamps": [at(3)],
                    "Values": [4.0],
                    "StatusCode": "Complete",
                },
                {
                    "Id": "q1",
                    "Label": "p50",
                    "Timestamps": [at(1), at(2)],
                    "Values": [8.0, 7.0],
                    "StatusCode": "Complete",
                },
            ],
            "Messages": [{"Code": "MaxDatapointsExceeded", "Value": "paged"}],
        },
        {**request, "NextToken": "page-2"},
    )
    result = cloudwatch.get_metric_data(
        queries=[stat_query("q0", "Requests", "Sum"), stat_query("q1", "RequestLatency", "p50")],
        start=at(0),
        end=at(10),
        max_datapoints=4,
    )
    stubber.assert_no_pending_responses()
    assert result.calls == 2
    assert result.series["q0"].values == [1.0, 2.0, 3.0, 4.0]
    assert result.series["q1"].values == [9.0, 8.0, 7.0]
    # A series that was partial on any page is reported partial.
    assert result.series["q0"].status == "PartialData"
    assert result.messages == ["MaxDatapointsExceeded: paged"]


def test_get_metric_data_refuses_duplicate_ids_and_translates_throttling() -> None:
    with pytest.raises(ValueError, match="unique"):
        cloudwatch.get_metric_data(
            queries=[stat_query("q0", "Requests", "Sum")] * 2, start=at(0), end=at(1)
        )
    stubber = stub("cloudwatch")
    stubber.add_client_error("get_metric_data", "Throttling", "Rate exceeded", 400)
    with pytest.raises(AwsTransientError, match="GetMetricData"):
        cloudwatch.get_metric_data(
            queries=[stat_query("q0", "Requests", "Sum")], start=at(0), end=at(1)
        )


def test_put_metric_alarm_percentile_and_metric_math() -> None:
    stubber = stub("cloudwatch")
    latency = AlarmSpec(
        name="modeldeck-iris-staging-p99-latency",
        description="p99",
        threshold=2000.0,
        comparison="GreaterThanThreshold",
        evaluation_periods=3,
        datapoints_to_alarm=2,
        metric=MetricStat(
            namespace="AWS/AppRunner",
            metric_name="RequestLatency",
            dimensions=DIMS,
            stat="p99",
            period=60,
        ),
        tags=(("modeldeck:model", "iris"),),
    )
    stubber.add_response(
        "put_metric_alarm",
        {},
        {
            "AlarmName": "modeldeck-iris-staging-p99-latency",
            "AlarmDescription": "p99",
            "ActionsEnabled": False,
            "Threshold": 2000.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "TreatMissingData": "notBreaching",
            "Namespace": "AWS/AppRunner",
            "MetricName": "RequestLatency",
            "Dimensions": API_DIMS,
            "Period": 60,
            "ExtendedStatistic": "p99",
            "EvaluateLowSampleCountPercentile": "ignore",
            "Tags": [{"Key": "modeldeck:model", "Value": "iris"}],
        },
    )
    cloudwatch.put_metric_alarm(spec=latency)
    rate = AlarmSpec(
        name="modeldeck-iris-staging-5xx-rate",
        description="rate",
        threshold=5.0,
        comparison="GreaterThanThreshold",
        evaluation_periods=3,
        datapoints_to_alarm=2,
        metrics=(
            MetricQuery(
                id="requests", stat=stat_query("x", "Requests", "Sum").stat, return_data=False
            ),
            MetricQuery(
                id="errors",
                stat=stat_query("x", "5xxStatusResponses", "Sum").stat,
                return_data=False,
            ),
            MetricQuery(
                id="rate",
                expression="IF(requests >= 10, 100 * errors / requests, 0)",
                label="5xx rate (%)",
            ),
        ),
    )
    stubber.add_response(
        "put_metric_alarm",
        {},
        {
            "AlarmName": "modeldeck-iris-staging-5xx-rate",
            "AlarmDescription": "rate",
            "ActionsEnabled": False,
            "Threshold": 5.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": 2,
            "TreatMissingData": "notBreaching",
            "Metrics": [
                {**api_stat("requests", "Requests", "Sum"), "ReturnData": False},
                {**api_stat("errors", "5xxStatusResponses", "Sum"), "ReturnData": False},
                {
                    "Id": "rate",
                    "ReturnData": True,
                    "Expression": "IF(requests >= 10, 100 * errors / requests, 0)",
                    "Label": "5xx rate (%)",
                },
            ],
        },
    )
    cloudwatch.put_metric_alarm(spec=rate)
    stubber.assert_no_pending_responses()


def test_describe_alarms_pages_and_delete_and_set_state() -> None:
    stubber = stub("cloudwatch")
    names = ["a-5xx-rate", "a-p99-latency"]
    alarm = {
        "AlarmName": "a-5xx-rate",
        "AlarmArn": "arn:aws:cloudwatch:us-east-1:000000000000:alarm:a-5xx-rate",
        "StateValue": "ALARM",
        "StateReason": "Threshold Crossed: 2 out of the last 3 datapoints were greater than 5.0",
        "StateUpdatedTimestamp": T0,
        "Threshold": 5.0,
    }
    stubber.add_response(
        "describe_alarms",
        {"MetricAlarms": [alarm], "NextToken": "n1"},
        {"AlarmNames": names, "AlarmTypes": ["MetricAlarm"]},
    )
    stubber.add_response(
        "describe_alarms",
        {
            "MetricAlarms": [
                {**alarm, "AlarmName": "a-p99-latency", "StateValue": "OK", "StateReason": "fine"}
            ]
        },
        {"AlarmNames": names, "AlarmTypes": ["MetricAlarm"], "NextToken": "n1"},
    )
    found = cloudwatch.describe_alarms(names=reversed(names))
    assert [(a.name, a.state, a.firing) for a in found] == [
        ("a-5xx-rate", "ALARM", True),
        ("a-p99-latency", "OK", False),
    ]
    assert found[0].reason.startswith("Threshold Crossed") and found[0].updated_at == T0
    stubber.add_response("delete_alarms", {}, {"AlarmNames": names})
    cloudwatch.delete_alarms(names=names)
    stubber.add_response(
        "set_alarm_state",
        {},
        {"AlarmName": "a-5xx-rate", "StateValue": "ALARM", "StateReason": "test"},
    )
    cloudwatch.set_alarm_state(name="a-5xx-rate", state="ALARM", reason="test")
    stubber.add_client_error(
        "set_alarm_state",
        "ResourceNotFound",
        "alarm does not exist",
        404,
        expected_params={"AlarmName": "gone", "StateValue": "OK", "StateReason": "x"},
    )
    with pytest.raises(AwsNotFoundError):
        cloudwatch.set_alarm_state(name="gone", state="OK", reason="x")
    with pytest.raises(ValueError, match="state must be"):
        cloudwatch.set_alarm_state(name="a", state="FIRING", reason="x")
    stubber.assert_no_pending_responses()


def test_filter_log_events_newest_first_with_filters_and_paging() -> None:
    stubber = stub("logs")
    group = "/aws/apprunner/iris-staging/0123456789abcdef0123456789abcdef/application"
    stubber.add_response(
        "filter_log_events",
        {
            "events": [
                {
                    "logStreamName": "instance/ab12",
                    "timestamp": 2000,
                    "message": "later",
                    "ingestionTime": 2001,
                    "eventId": "2",
                },
                {
                    "logStreamName": "instance/ab12",
                    "timestamp": 1000,
                    "message": "earlier",
                    "ingestionTime": 1001,
                    "eventId": "1",
                },
            ],
            "nextToken": "older",
            "searchedLogStreams": [],
        },
        {
            "logGroupName": group,
            "limit": 2,
            "startFromHead": False,
            "logStreamNamePrefix": "instance/",
            "filterPattern": '"POST /predict"',
            "startTime": 0,
            "endTime": 5000,
        },
    )
    page = logs.filter_log_events(
        group=group,
        stream_prefix="instance/",
        pattern='"POST /predict"',
        start_ms=0,
        end_ms=5000,
        limit=2,
    )
    assert [e.message for e in page.events] == ["later", "earlier"]
    assert page.events[0].stream == "instance/ab12" and page.next_token == "older"
    stubber.add_response(
        "filter_log_events",
        {"events": [], "searchedLogStreams": []},
        {
            "logGroupName": group,
            "limit": 200,
            "startFromHead": False,
            "logStreamNames": ["deployment/op-1"],
            "nextToken": "older",
        },
    )
    page = logs.filter_log_events(group=group, streams=["deployment/op-1"], next_token="older")
    assert page.events == [] and page.next_token is None
    # A group App Runner has not created yet reads as empty, not as an error.
    stubber.add_client_error("filter_log_events", "ResourceNotFoundException", "no group", 400)
    assert logs.filter_log_events(group="/nope").events == []
    with pytest.raises(ValueError):
        logs.filter_log_events(group=group, streams=["a"], stream_prefix="b")
    stubber.assert_no_pending_responses()


def test_describe_log_streams_recent_first_or_by_prefix() -> None:
    stubber = stub("logs")
    stubber.add_response(
        "describe_log_streams",
        {
            "logStreams": [
                {"logStreamName": "events", "lastEventTimestamp": 9, "firstEventTimestamp": 1}
            ]
        },
        {"logGroupName": "g", "limit": 50, "orderBy": "LastEventTime", "descending": True},
    )
    assert [s.name for s in logs.describe_log_streams(group="g")] == ["events"]
    stubber.add_response(
        "describe_log_streams",
        {"logStreams": [{"logStreamName": "deployment/x"}]},
        {"logGroupName": "g", "limit": 10, "logStreamNamePrefix": "deployment/"},
    )
    found = logs.describe_log_streams(group="g", prefix="deployment/", limit=10)
    assert found[0].name == "deployment/x" and found[0].last_event_ms is None
    stubber.add_client_error("describe_log_streams", "ResourceNotFoundException", "no group", 400)
    assert logs.describe_log_streams(group="missing") == []
    stubber.assert_no_pending_responses()
