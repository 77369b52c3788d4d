"""The embedded AWS's GetMetricData and FilterLogEvents (devstack/aws_fidelity.py):
the same answers as moto's own where moto is right, AWS's where it is not."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.cloudwatch.models import cloudwatch_backends

from devstack import aws_fidelity

T0 = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
SERVICE = [{"Name": "ServiceName", "Value": "s"}, {"Name": "ServiceID", "Value": "i"}]


@pytest.fixture
def clean_aws(moto_server: str) -> Iterator[str]:
    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    yield moto_server


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _backend() -> Any:
    return cloudwatch_backends["123456789012"]["us-east-1"]


def test_install_is_done_by_the_embedded_aws_and_idempotent(moto_server: str) -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    aws_fidelity.install()
    assert CloudWatchBackend.get_metric_data is aws_fidelity._get_metric_data


def test_get_metric_data_answers_as_moto_does_on_random_data(clean_aws: str) -> None:
    rng = random.Random(7)
    cw = _client("cloudwatch", clean_aws)
    names = ["Requests", "RequestLatency", "CPUUtilization"]
    data = []
    for _ in range(600):
        when = T0 + dt.timedelta(seconds=rng.randrange(0, 6 * 3600))
        name = rng.choice(names)
        if rng.random() < 0.5:
            datum = {"MetricName": name, "Value": round(rng.uniform(0, 100), 3)}
        else:
            low = rng.uniform(0, 50)
            datum = {
                "MetricName": name,
                "StatisticValues": {
                    "SampleCount": float(rng.randint(1, 9)),
                    "Sum": round(low * 3, 3),
                    "Minimum": round(low, 3),
                    "Maximum": round(low + 10, 3),
                },
            }
        data.append({**datum, "Dimensions": SERVICE, "Timestamp": when, "Unit": "Count"})
    for start in range(0, len(data), 100):
        cw.put_metric_data(Namespace="AWS/AppRunner", MetricData=data[start : start + 100])

    backend = _backend()
    for period, stat, scan in [
        (60, "Sum", "TimestampAscending"),
        (300, "Average", "TimestampDescending"),
        (900, "Maximum", "TimestampAscending"),
        (3600, "Minimum", "TimestampAscending"),
        (300, "SampleCount", "TimestampAscending"),
    ]:
        queries = [
            {
                "Id": f"q{i}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/AppRunner",
                        "MetricName": n,
                        "Dimensions": SERVICE,
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
            for i, n in enumerate(names)
        ]
        queries.append({"Id": "copy", "Expression": "q0"})
        start = backend.metric_data[0].timestamp.replace(hour=3, minute=7)
        end = start + dt.timedelta(hours=5)
        ours = backend.get_metric_data(queries, start, end, scan)
        theirs = backend._moto_get_metric_data(queries, start, end, scan)
        # Same answers; sums may differ in the last bit (another summation order).
        assert len(ours) == len(theirs)
        for mine, moto in zip(ours, theirs, strict=True):
            assert {k: v for k, v in mine.items() if k != "values"} == {
                k: v for k, v in moto.items() if k != "values"
            }, (period, stat)
            assert mine["values"] == pytest.approx(moto["values"], rel=1e-12), (period, stat)
        assert any(r["values"] for r in ours)


def test_get_metric_data_matches_namespace_and_exact_dimensions_and_skips_percentiles(
    clean_aws: str,
) -> None:
    cw = _client("cloudwatch", clean_aws)
    cw.put_metric_data(
        Namespace="AWS/AppRunner",
        MetricData=[
            {"MetricName": "Requests", "Dimensions": SERVICE, "Timestamp": T0, "Value": 5.0}
        ],
    )
    # Same name and dimensions, another namespace; and one more dimension.
    cw.put_metric_data(
        Namespace="Other",
        MetricData=[
            {"MetricName": "Requests", "Dimensions": SERVICE, "Timestamp": T0, "Value": 100.0}
        ],
    )
    cw.put_metric_data(
        Namespace="AWS/AppRunner",
        MetricData=[
            {
                "MetricName": "Requests",
                "Dimensions": [*SERVICE, {"Name": "Instance", "Value": "x"}],
                "Timestamp": T0,
                "Value": 1000.0,
            }
        ],
    )

    def query(stat: str, dims: list[dict[str, str]]) -> list[float]:
        answer = cw.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "q",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/AppRunner",
                            "MetricName": "Requests",
                            "Dimensions": dims,
                        },
                        "Period": 60,
                        "Stat": stat,
                    },
                }
            ],
            StartTime=T0 - dt.timedelta(minutes=1),
            EndTime=T0 + dt.timedelta(minutes=1),
        )
        return answer["MetricDataResults"][0]["Values"]

    assert query("Sum", list(reversed(SERVICE))) == [5.0]
    # moto would answer [None] (it computes no percentiles); AWS computes one
    # from stored values. Here: no data point rather than a null.
    assert query("p99", SERVICE) == []


def test_filter_log_events_newest_first_pages_prefix_and_pattern(clean_aws: str) -> None:
    logs = _client("logs", clean_aws)
    logs.create_log_group(logGroupName="g")
    for stream in ("instance/a", "instance/b", "events"):
        logs.create_log_stream(logGroupName="g", logStreamName=stream)
    base = (int(time.time()) - 3600) * 1000
    for stream, offset in (("instance/a", 0), ("instance/b", 1)):
        logs.put_log_events(
            logGroupName="g",
            logStreamName=stream,
            logEvents=[
                {
                    "timestamp": base + i * 10 + offset,
                    "message": f"{stream} {i} {'ERROR' if i % 5 == 0 else 'ok'}",
                }
                for i in range(50)
            ],
        )
    logs.put_log_events(
        logGroupName="g",
        logStreamName="events",
        logEvents=[{"timestamp": base + 10_000, "message": "newest"}],
    )

    def read(**kwargs: Any) -> tuple[list[str], str | None]:
        answer = logs.filter_log_events(logGroupName="g", **kwargs)
        return [e["message"] for e in answer["events"]], answer.get("nextToken")

    messages, token = read(limit=3, startFromHead=False, logStreamNamePrefix="instance/")
    assert messages == ["instance/b 49 ok", "instance/a 49 ok", "instance/b 48 ok"]
    seen = list(messages)
    while token:
        messages, token = read(
            limit=7, startFromHead=False, logStreamNamePrefix="instance/", nextToken=token
        )
        seen += messages
    assert len(seen) == 100 and len(set(seen)) == 100
    assert seen[-1] == "instance/a 0 ERROR"
    # Oldest first is still the default, and the whole group without a prefix.
    messages, _ = read(limit=2)
    assert messages == ["instance/a 0 ERROR", "instance/b 0 ERROR"]
    assert read(limit=1, startFromHead=False)[0] == ["newest"]
    # Time range (inclusive) and moto's term patterns.
    messages, _ = read(
        startFromHead=False, filterPattern="ERROR", startTime=base + 100, endTime=base + 201
    )
    assert messages == [
        "instance/b 20 ERROR",
        "instance/a 20 ERROR",
        "instance/b 15 ERROR",
        "instance/a 15 ERROR",
        "instance/b 10 ERROR",
        "instance/a 10 ERROR",
    ]
    messages, _ = read(logStreamNames=["events"])
    assert messages == ["newest"]
    assert read(nextToken="not-a-token")[0] == []
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.filter_log_events(logGroupName="missing")


def test_filter_log_events_json_patterns(clean_aws: str) -> None:
    """moto matches every line for a JSON pattern (found by QA: the logs page's
    own suggestion, { $.status >= 500 }, filtered nothing locally)."""
    logs = _client("logs", clean_aws)
    logs.create_log_group(logGroupName="j")
    logs.create_log_stream(logGroupName="j", logStreamName="s")
    base = (int(time.time()) - 60) * 1000
    lines = [
        {"status": 200, "path": "/predict", "level": "INFO"},
        {"status": 422, "path": "/predict", "level": "INFO"},
        {"status": 503, "path": "/readyz", "level": "ERROR"},
        {"status": 500, "path": "/predict", "level": "ERROR", "detail": {"kind": "oom"}},
    ]
    logs.put_log_events(
        logGroupName="j",
        logStreamName="s",
        logEvents=[
            *({"timestamp": base + i, "message": json.dumps(line)} for i, line in enumerate(lines)),
            {"timestamp": base + 10, "message": "not json at all: status 500"},
        ],
    )

    def statuses(pattern: str) -> list[int]:
        events = logs.filter_log_events(logGroupName="j", filterPattern=pattern)["events"]
        return [json.loads(e["message"])["status"] for e in events]

    assert statuses("{ $.status >= 500 }") == [503, 500]
    assert statuses("{ $.status = 422 }") == [422]
    assert statuses('{ $.status != 200 && $.path = "/predict" }') == [422, 500]
    assert statuses("{ $.status = 422 || $.level = ERR* }") == [422, 503, 500]
    assert statuses("{ $.detail.kind = oom }") == [500]
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.filter_log_events(logGroupName="j", filterPattern="{ $.status >= 500 ")
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.filter_log_events(logGroupName="j", filterPattern="{ status = 1 }")
