"""The fault proxy itself does what the fault tests rely on, against the real S3 server."""

from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions
import pytest

pytestmark = pytest.mark.integration


def client(endpoint: str, attempts: int = 1):
    cfg = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=2)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)


def test_requests_pass_through_and_are_recorded(fault_proxy, bucket, s3_prefix):
    c = client(fault_proxy.endpoint)
    c.put_object(Bucket=bucket, Key=f"{s3_prefix}/a", Body=b"hello")
    assert c.get_object(Bucket=bucket, Key=f"{s3_prefix}/a")["Body"].read() == b"hello"
    assert fault_proxy.count("PUT", r"/a$", "200") == 1
    assert fault_proxy.count("GET", r"/a$", "200") == 1


def test_lost_reply_means_the_store_acted(fault_proxy, seaweed, bucket, s3_prefix):
    fault_proxy.add("PUT", r"/lost$", "lose_reply")
    with pytest.raises(botocore.exceptions.ClientError):
        client(fault_proxy.endpoint).put_object(Bucket=bucket, Key=f"{s3_prefix}/lost", Body=b"kept")
    direct = seaweed.client().get_object(Bucket=bucket, Key=f"{s3_prefix}/lost")
    assert direct["Body"].read() == b"kept"


def test_error_is_answered_without_forwarding(fault_proxy, seaweed, bucket, s3_prefix):
    fault_proxy.add("PUT", r"/refused$", "error", times=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(fault_proxy.endpoint).put_object(Bucket=bucket, Key=f"{s3_prefix}/refused", Body=b"x")
    assert e.value.response["Error"]["Code"] == "SlowDown"
    with pytest.raises(botocore.exceptions.ClientError):
        seaweed.client().head_object(Bucket=bucket, Key=f"{s3_prefix}/refused")


def test_reset_cuts_a_download_halfway(fault_proxy, bucket, s3_prefix):
    c = client(fault_proxy.endpoint)
    c.put_object(Bucket=bucket, Key=f"{s3_prefix}/big", Body=b"x" * 100_000)
    fault_proxy.add("GET", r"/big$", "reset", after=50_000, times=1)
    with pytest.raises(Exception):  # noqa: B017 - botocore raises one of several read errors
        c.get_object(Bucket=bucket, Key=f"{s3_prefix}/big")["Body"].read()
    assert len(c.get_object(Bucket=bucket, Key=f"{s3_prefix}/big")["Body"].read()) == 100_000


def test_stall_stops_sending_mid_body(fault_proxy, bucket, s3_prefix):
    c = client(fault_proxy.endpoint)
    c.put_object(Bucket=bucket, Key=f"{s3_prefix}/slow", Body=b"y" * 10_000)
    fault_proxy.add("GET", r"/slow$", "stall", after=100, seconds=4, times=1)
    with pytest.raises(Exception):  # noqa: B017 - a read timeout, as botocore reports it
        c.get_object(Bucket=bucket, Key=f"{s3_prefix}/slow")["Body"].read()


def test_stall_of_a_reply_without_a_body_holds_the_whole_reply_back(fault_proxy, seaweed, bucket, s3_prefix):
    # a PUT's reply has no body: its headers alone would be the whole reply, so none may be sent
    fault_proxy.add("PUT", r"/held$", "stall", seconds=6, times=1)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client(fault_proxy.endpoint).put_object(Bucket=bucket, Key=f"{s3_prefix}/held", Body=b"stored")
    direct = seaweed.client().get_object(Bucket=bucket, Key=f"{s3_prefix}/held")
    assert direct["Body"].read() == b"stored"  # the store acted; only its reply was held back
