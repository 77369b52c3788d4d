"""Contract tests: every boto3 operation the dashboard calls, checked by
botocore's Stubber against AWS's own service model (parameter names, types,
required members), which moto does not enforce."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from dashboard.aws import apprunner, s3, ssm
from dashboard.aws.clients import client, reset_clients
from dashboard.aws.errors import (
    AwsAlreadyExistsError,
    AwsNotFoundError,
    AwsTransientError,
)

OP1 = "6f1c2a9e-1111-4c3b-9d1e-0123456789ab"
OTHER = "6f1c2a9e-2222-4c3b-9d1e-0123456789ab"
MISSING = "6f1c2a9e-3333-4c3b-9d1e-0123456789ab"
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
ARN = (
    "arn:aws:apprunner:us-east-1:000000000000:service/iris-staging/0123456789abcdef0123456789abcdef"
)


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


def test_s3_list_objects_pages() -> None:
    stubber = stub("s3")
    stubber.add_response(
        "list_objects_v2",
        {
            "Contents": [
                {"Key": "models/iris/1/model.pt", "Size": 3, "LastModified": NOW, "ETag": '"e"'}
            ],
            "IsTruncated": True,
            "NextContinuationToken": "t1",
        },
        {"Bucket": "b", "Prefix": "models/iris/"},
    )
    stubber.add_response(
        "list_objects_v2",
        {
            "Contents": [{"Key": "models/iris/1/manifest.json", "Size": 9, "LastModified": NOW}],
            "IsTruncated": False,
        },
        {"Bucket": "b", "Prefix": "models/iris/", "ContinuationToken": "t1"},
    )
    keys = [o.key for o in s3.iter_objects(bucket="b", prefix="models/iris/")]
    assert keys == ["models/iris/1/model.pt", "models/iris/1/manifest.json"]
    stubber.assert_no_pending_responses()


def test_s3_list_prefixes() -> None:
    stubber = stub("s3")
    stubber.add_response(
        "list_objects_v2",
        {
            "CommonPrefixes": [{"Prefix": "models/iris/"}, {"Prefix": "models/fraud/"}],
            "IsTruncated": False,
        },
        {"Bucket": "b", "Prefix": "models/", "Delimiter": "/"},
    )
    assert s3.list_prefixes(bucket="b", prefix="models/") == ["models/iris/", "models/fraud/"]


def test_s3_head_object_found_and_missing() -> None:
    stubber = stub("s3")
    stubber.add_response(
        "head_object",
        {"ContentLength": 10, "LastModified": NOW, "ETag": '"x"', "VersionId": "v1"},
        {"Bucket": "b", "Key": "k"},
    )
    stubber.add_client_error(
        "head_object", "404", "Not Found", 404, expected_params={"Bucket": "b", "Key": "gone"}
    )
    info = s3.head_object(bucket="b", key="k")
    assert info is not None and info.version_id == "v1" and info.size == 10
    assert s3.head_object(bucket="b", key="gone") is None


def test_s3_get_json() -> None:
    stubber = stub("s3")
    body = b'{"a": 1}'
    stubber.add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentLength": len(body)},
        {"Bucket": "b", "Key": "m.json"},
    )
    stubber.add_client_error(
        "get_object", "NoSuchKey", "no", 404, expected_params={"Bucket": "b", "Key": "x"}
    )
    assert s3.get_json(bucket="b", key="m.json") == {"a": 1}
    assert s3.get_json(bucket="b", key="x") is None


def test_s3_put_json_and_file(tmp_path: Any) -> None:
    stubber = stub("s3")
    stubber.add_response(
        "put_object",
        {"VersionId": "v2"},
        {
            "Bucket": "b",
            "Key": "m.json",
            "Body": b'{\n  "a": 1\n}',
            "ContentType": "application/json",
        },
    )
    assert s3.put_json(bucket="b", key="m.json", document={"a": 1}) == "v2"
    stubber.add_response(
        "put_object",
        {"VersionId": "v4"},
        {
            "Bucket": "b",
            "Key": "m.json",
            "Body": b'{\n  "a": 1\n}',
            "ContentType": "application/json",
            "IfNoneMatch": "*",
        },
    )
    assert s3.put_json(bucket="b", key="m.json", document={"a": 1}, only_if_absent=True) == "v4"
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    from botocore.stub import ANY

    stubber.add_response(
        "put_object",
        {"VersionId": "v3"},
        {
            "Bucket": "b",
            "Key": "k",
            "Body": ANY,
            "ContentType": "application/octet-stream",
            "ChecksumSHA256": "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            "IfNoneMatch": "*",
        },
    )
    assert (
        s3.put_file(
            bucket="b",
            key="k",
            path=path,
            sha256_b64="ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            only_if_absent=True,
        )
        == "v3"
    )
    stubber.assert_no_pending_responses()


def test_s3_conditional_writes_that_find_the_key_taken() -> None:
    """What real S3 answers to If-None-Match: * on an existing key (412
    PreconditionFailed) and during a concurrent conditional write (409
    ConditionalRequestConflict) becomes AwsAlreadyExistsError."""
    stubber = stub("s3")
    for code, status in (("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)):
        stubber.add_client_error(
            "put_object",
            code,
            "At least one of the pre-conditions you specified did not hold",
            status,
            expected_params={
                "Bucket": "b",
                "Key": "m.json",
                "Body": b"{}",
                "ContentType": "application/json",
                "IfNoneMatch": "*",
            },
        )
        with pytest.raises(AwsAlreadyExistsError):
            s3.put_json(bucket="b", key="m.json", document={}, only_if_absent=True)
    stubber.add_client_error(
        "complete_multipart_upload",
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
        expected_params={
            "Bucket": "b",
            "Key": "k",
            "UploadId": UPLOAD_ID,
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"e1"'}]},
            "IfNoneMatch": "*",
        },
    )
    with pytest.raises(AwsAlreadyExistsError):
        s3.complete_multipart_upload(bucket="b", key="k", upload_id=UPLOAD_ID, parts=[(1, '"e1"')])
    stubber.assert_no_pending_responses()


def test_s3_delete_object() -> None:
    stubber = stub("s3")
    stubber.add_response("delete_object", {}, {"Bucket": "b", "Key": "k"})
    s3.delete_object(bucket="b", key="k")
    stubber.assert_no_pending_responses()


def test_ssm_get_and_put_parameter() -> None:
    stubber = stub("ssm")
    stubber.add_response(
        "get_parameter",
        {
            "Parameter": {
                "Name": "/models/iris/staging",
                "Type": "String",
                "Value": "{}",
                "Version": 3,
            }
        },
        {"Name": "/models/iris/staging"},
    )
    stubber.add_client_error(
        "get_parameter", "ParameterNotFound", "", 400, expected_params={"Name": "/nope"}
    )
    stubber.add_response(
        "put_parameter",
        {"Version": 4, "Tier": "Standard"},
        {
            "Name": "/models/iris/staging",
            "Value": "{}",
            "Type": "String",
            "Overwrite": True,
            "Description": "d",
            "Tier": "Standard",
        },
    )
    assert ssm.get_parameter(name="/models/iris/staging") == "{}"
    assert ssm.get_parameter(name="/nope") is None
    assert ssm.put_parameter(name="/models/iris/staging", value="{}", description="d") == 4


def test_ssm_throttling_is_transient() -> None:
    stubber = stub("ssm")
    for _ in range(5):  # standard retry mode retries throttling itself first
        stubber.add_client_error("put_parameter", "ThrottlingException", "slow down", 400)
    with pytest.raises(AwsTransientError):
        ssm.put_parameter(name="/x", value="{}")


def _service(status: str = "RUNNING") -> dict[str, Any]:
    return {
        "ServiceName": "iris-staging",
        "ServiceId": "0123456789abcdef0123456789abcdef",
        "ServiceArn": ARN,
        "ServiceUrl": "abc.us-east-1.awsapprunner.com",
        "CreatedAt": NOW,
        "UpdatedAt": NOW,
        "Status": status,
        "SourceConfiguration": {},
        "InstanceConfiguration": {},
        "AutoScalingConfigurationSummary": {},
        "NetworkConfiguration": {},
    }


def test_apprunner_describe_service() -> None:
    stubber = stub("apprunner")
    stubber.add_response("describe_service", {"Service": _service()}, {"ServiceArn": ARN})
    stubber.add_client_error(
        "describe_service",
        "ResourceNotFoundException",
        "no",
        400,
        expected_params={"ServiceArn": ARN},
    )
    info = apprunner.describe_service(service_arn=ARN)
    assert (info.name, info.url, info.status) == (
        "iris-staging",
        "abc.us-east-1.awsapprunner.com",
        "RUNNING",
    )
    with pytest.raises(AwsNotFoundError):
        apprunner.describe_service(service_arn=ARN)


def test_apprunner_list_services_pages() -> None:
    stubber = stub("apprunner")
    summary = {
        k: _service()[k]
        for k in (
            "ServiceName",
            "ServiceId",
            "ServiceArn",
            "ServiceUrl",
            "CreatedAt",
            "UpdatedAt",
            "Status",
        )
    }
    stubber.add_response(
        "list_services", {"ServiceSummaryList": [summary], "NextToken": "n"}, {"MaxResults": 20}
    )
    stubber.add_response(
        "list_services", {"ServiceSummaryList": [summary]}, {"MaxResults": 20, "NextToken": "n"}
    )
    assert [s.arn for s in apprunner.list_services()] == [ARN, ARN]


def test_apprunner_get_operation_searches_pages() -> None:
    stubber = stub("apprunner")
    stubber.add_response(
        "list_operations",
        {
            "OperationSummaryList": [
                {
                    "Id": OTHER,
                    "Type": "START_DEPLOYMENT",
                    "Status": "SUCCEEDED",
                    "TargetArn": ARN,
                    "StartedAt": NOW,
                    "EndedAt": NOW,
                    "UpdatedAt": NOW,
                }
            ],
            "NextToken": "n",
        },
        {"ServiceArn": ARN, "MaxResults": 20},
    )
    stubber.add_response(
        "list_operations",
        {
            "OperationSummaryList": [
                {
                    "Id": OP1,
                    "Type": "START_DEPLOYMENT",
                    "Status": "ROLLBACK_IN_PROGRESS",
                    "TargetArn": ARN,
                    "StartedAt": NOW,
                    "UpdatedAt": NOW,
                }
            ]
        },
        {"ServiceArn": ARN, "MaxResults": 20, "NextToken": "n"},
    )
    operation = apprunner.get_operation(service_arn=ARN, operation_id=OP1)
    assert operation is not None and operation.status == "ROLLBACK_IN_PROGRESS" and operation.active
    stubber.add_response(
        "list_operations", {"OperationSummaryList": []}, {"ServiceArn": ARN, "MaxResults": 20}
    )
    assert apprunner.get_operation(service_arn=ARN, operation_id=MISSING) is None


UPLOAD_ID = "2~abcdefghijklmnopqrstuvwxyz"


def test_s3_multipart_calls() -> None:
    stubber = stub("s3")
    stubber.add_response(
        "create_multipart_upload",
        {"UploadId": UPLOAD_ID, "Bucket": "b", "Key": "k"},
        {"Bucket": "b", "Key": "k", "ContentType": "application/octet-stream"},
    )
    stubber.add_response(
        "list_parts",
        {
            "Parts": [{"PartNumber": 1, "ETag": '"e1"', "Size": 5}],
            "IsTruncated": True,
            "NextPartNumberMarker": 1,
        },
        {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID, "PartNumberMarker": 0},
    )
    stubber.add_response(
        "list_parts",
        {"Parts": [{"PartNumber": 2, "ETag": '"e2"', "Size": 3}], "IsTruncated": False},
        {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID, "PartNumberMarker": 1},
    )
    stubber.add_response(
        "complete_multipart_upload",
        {"VersionId": "v9", "Bucket": "b", "Key": "k"},
        {
            "Bucket": "b",
            "Key": "k",
            "UploadId": UPLOAD_ID,
            "MultipartUpload": {
                "Parts": [{"PartNumber": 1, "ETag": '"e1"'}, {"PartNumber": 2, "ETag": '"e2"'}]
            },
            "IfNoneMatch": "*",
        },
    )
    stubber.add_response(
        "abort_multipart_upload", {}, {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID}
    )
    stubber.add_client_error(
        "abort_multipart_upload",
        "NoSuchUpload",
        "gone",
        404,
        expected_params={"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID},
    )
    stubber.add_response(
        "list_multipart_uploads",
        {
            "Uploads": [{"Key": "models/a/1/m.pt", "UploadId": UPLOAD_ID, "Initiated": NOW}],
            "IsTruncated": False,
        },
        {"Bucket": "b", "Prefix": "models/"},
    )
    assert (
        s3.create_multipart_upload(bucket="b", key="k", content_type="application/octet-stream")
        == UPLOAD_ID
    )
    assert [p.part_number for p in s3.list_parts(bucket="b", key="k", upload_id=UPLOAD_ID)] == [
        1,
        2,
    ]
    assert (
        s3.complete_multipart_upload(
            bucket="b", key="k", upload_id=UPLOAD_ID, parts=[(1, '"e1"'), (2, '"e2"')]
        )
        == "v9"
    )
    s3.abort_multipart_upload(bucket="b", key="k", upload_id=UPLOAD_ID)
    s3.abort_multipart_upload(bucket="b", key="k", upload_id=UPLOAD_ID)  # already gone: fine
    assert [u.upload_id for u in s3.iter_multipart_uploads(bucket="b", prefix="models/")] == [
        UPLOAD_ID
    ]
    stubber.assert_no_pending_responses()


def test_s3_presigned_part_url_is_sigv4_and_expires() -> None:
    url = s3.presign_upload_part(
        bucket="b",
        key="models/m/1/model.pt",
        upload_id=UPLOAD_ID,
        part_number=3,
        content_length=5 * 1024 * 1024,
        expires_in=600,
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=600" in url
    assert "partNumber=3" in url and "uploadId=" in url
    # the part's size is signed: S3 refuses a PUT of any other length
    assert "X-Amz-SignedHeaders=content-length%3Bhost" in url


def test_s3_presigned_get_pins_the_object_version() -> None:
    # The validation worker downloads with this URL and holds no credentials.
    url = s3.presign_get_object(
        bucket="b", key="models/m/1/model.pt", version_id="v1", expires_in=3600
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=3600" in url
    assert "versionId=v1" in url and "/models/m/1/model.pt" in url
    unpinned = s3.presign_get_object(bucket="b", key="k", version_id=None, expires_in=60)
    assert "versionId" not in unpinned


def test_s3_get_object_pinned_version_for_validation(tmp_path: Any) -> None:
    from dashboard.registry.validation import hash_version

    stubber = stub("s3")
    body = b"model bytes"
    stubber.add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentLength": len(body)},
        {"Bucket": "b", "Key": "k", "VersionId": "v1"},
    )
    result = hash_version(bucket="b", key="k", s3_version_id="v1")
    assert result.ok and result.size == len(body)


def test_apprunner_list_operations() -> None:
    stubber = stub("apprunner")
    stubber.add_response(
        "list_operations",
        {
            "OperationSummaryList": [
                {
                    "Id": OP1,
                    "Type": "START_DEPLOYMENT",
                    "Status": "IN_PROGRESS",
                    "TargetArn": ARN,
                    "StartedAt": NOW,
                    "UpdatedAt": NOW,
                }
            ]
        },
        {"ServiceArn": ARN, "MaxResults": 20},
    )
    [operation] = apprunner.list_operations(service_arn=ARN)
    assert (operation.id, operation.type, operation.active) == (OP1, "START_DEPLOYMENT", True)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-24T03:00:00.000Z",  # ListObjectsV2's LastModified
        "2026-11-24T03:00:00.123Z",
        "2026-11-24T03:00:00Z",
        "2026-11-24T03:00:00+02:00",
        "Tue, 24 Nov 2026 03:00:00 GMT",  # Last-Modified headers (HeadObject, GetObject)
        1795489200,  # epoch seconds (JSON protocols)
        1795489200.5,
        "1795489200",
        "2026-11-24T03:00:00",  # no zone: botocore's own rule applies
    ],
)
def test_our_timestamp_parser_answers_as_botocores(value: Any) -> None:
    """The clients parse timestamps with the standard library where it can
    (fast_timestamp): every format AWS answers with must come out as the same
    instant botocore's documented parser gives, always in UTC."""
    import datetime as dt

    from botocore.parsers import DEFAULT_TIMESTAMP_PARSER

    from dashboard.aws.clients import fast_timestamp

    expected = DEFAULT_TIMESTAMP_PARSER(value)
    assert fast_timestamp(value) == expected
    if expected.tzinfo is not None:  # a zone-less value stays as botocore reads it
        assert fast_timestamp(value).utcoffset() == dt.timedelta(0)


def test_clients_parse_listings_with_the_fast_parser() -> None:
    s3_client = client("s3")
    parser = s3_client._endpoint._response_parser_factory.create_parser("rest-xml")
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
        b"<Contents><Key>models/iris/1/model.pt</Key>"
        b"<LastModified>2026-11-24T03:00:00.000Z</LastModified><Size>3</Size></Contents>"
        b"<IsTruncated>false</IsTruncated></ListBucketResult>"
    )
    shape = s3_client.meta.service_model.operation_model("ListObjectsV2").output_shape
    parsed = parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
    assert parsed["Contents"][0]["LastModified"] == NOW
    # The standard library's zone, not dateutil's: our parser did it.
    assert type(parsed["Contents"][0]["LastModified"].tzinfo) is dt.timezone
