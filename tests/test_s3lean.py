"""Lean S3 reads (storage/s3lean.py): small GETs and listing pages presigned by drtool's client and
sent on its own HTTP session. They must read exactly what boto3 reads, cost one request when the
store answers 200, and hand every other answer to boto3, which alone decides an error."""

from __future__ import annotations

import pytest

from drtool.errors import NotFound, StorageError
from drtool.storage import get_bytes, put_bytes, sigv4
from drtool.storage import s3 as s3mod
from drtool.storage.s3lean import EXPIRES, LeanReads

pytestmark = pytest.mark.integration

KEYS = ["pol/backups/a b/manifest.json", "pol/backups/a+b/dump", "pol/backups/%20/x", "pol/backups/é<&>/y"]


def store_at(endpoint: str, bucket: str, prefix: str, **kw) -> s3mod.S3Store:
    return s3mod.S3Store(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, region="us-east-1", **kw)


def no_boto3_reads(store: s3mod.S3Store, monkeypatch) -> None:
    """Make any read through boto3 fail the test."""
    for name in ("get_object", "list_objects_v2"):
        monkeypatch.setattr(store.client, name, lambda _name=name, **kw: pytest.fail(f"boto3 {_name} called: {kw}"))


@pytest.fixture
def filled(fault_proxy, bucket, s3_prefix):
    store = store_at(fault_proxy.endpoint, bucket, s3_prefix)
    for i, key in enumerate(KEYS):
        put_bytes(store, key, f"body {i}".encode())
    fault_proxy.requests.clear()
    return store


def test_a_read_answered_200_is_one_presigned_request_and_no_boto3_call(filled, fault_proxy, monkeypatch):
    no_boto3_reads(filled, monkeypatch)
    assert [o.key for o in filled.list_objects("pol/")] == sorted(KEYS)
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    assert [(m, o) for m, _, o in fault_proxy.requests] == [("GET", "200"), ("GET", "200")]
    assert len(fault_proxy.presigned) == 2
    assert sigv4.presigner(filled.client, filled.bucket, EXPIRES) is not None  # signed by drtool, accepted


def test_reads_without_the_lean_path_give_the_same_answers(filled, monkeypatch):
    lean = [(o.key, o.size, o.etag, o.modified) for o in filled.list_objects("pol/")]
    bodies = [get_bytes(filled, k) for k in KEYS]
    etag = filled.get(KEYS[1]).etag
    filled._lean = LeanReads(None)
    assert not filled._lean.usable
    assert [(o.key, o.size, o.etag, o.modified) for o in filled.list_objects("pol/")] == lean
    assert [get_bytes(filled, k) for k in KEYS] == bodies
    assert filled.get(KEYS[1]).etag == etag


def test_a_missing_object_is_not_found_in_one_request(filled, fault_proxy):
    with pytest.raises(NotFound, match=r"/pol/nothing: object not found$"):
        filled.get("pol/nothing")
    assert [o for _, _, o in fault_proxy.requests] == ["404"]


@pytest.mark.parametrize("status", [500, 503])
def test_a_refused_lean_read_is_asked_again_through_boto3(filled, fault_proxy, status):
    fault_proxy.add("GET", r"/manifest\.json$", "error", status=status, times=1)
    fault_proxy.add("GET", r"list-type=2", "error", status=status, times=1)
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    assert [o.key for o in filled.list_objects("pol/")] == sorted(KEYS)
    assert [o for _, _, o in fault_proxy.requests] == [f"error {status}", "200"] * 2
    assert len(fault_proxy.presigned) == 2  # the second of each went through boto3
    assert filled._lean.usable


@pytest.mark.parametrize("status", [403, 301, 400])
def test_a_store_that_refuses_presigned_reads_costs_one_request(filled, fault_proxy, status):
    """Some S3 clones refuse query-string signatures (403), and a bucket in another region than
    configured answers 301 or 400, which boto3 follows and this path does not: the answer goes to
    boto3, whose request is served, and this store reads the full way from then on."""
    fault_proxy.add("GET", r"/manifest\.json$", "error", status=status, times=1)
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    assert not filled._lean.usable
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    assert [o for _, _, o in fault_proxy.requests] == [f"error {status}", "200", "200"]
    assert len(fault_proxy.presigned) == 1


def test_a_lean_read_cut_off_halfway_is_read_again_whole(filled, fault_proxy):
    big = b"".join(i.to_bytes(4, "big") for i in range(200_000))
    put_bytes(filled, "pol/big", big)
    fault_proxy.add("GET", r"/pol/big$", "reset", after=len(big) // 2, times=1)
    with pytest.raises(StorageError, match=r"/pol/big: the connection broke while trying to read"):
        get_bytes(filled, "pol/big")  # the bare store says so; RetryingStore resumes (test_reads.py)
    assert get_bytes(filled, "pol/big") == big


def test_an_unreachable_store_is_named_without_the_signed_url(bucket, s3_prefix):
    store = store_at("http://127.0.0.1:9", bucket, s3_prefix, max_attempts=1)
    for read in (lambda: store.get("pol/x"), lambda: list(store.list_objects("pol/"))):
        with pytest.raises(StorageError) as e:
            read()
        assert "cannot reach the store at http://127.0.0.1:9" in str(e.value)
        assert "X-Amz" not in str(e.value) and "Signature" not in str(e.value)


def test_a_client_that_validates_response_checksums_reads_the_full_way(bucket, s3_prefix, seaweed):
    assert store_at(seaweed.endpoint, bucket, s3_prefix)._lean.usable
    assert not store_at(seaweed.endpoint, bucket, s3_prefix, request_checksums="when_supported")._lean.usable


def test_lean_reads_use_the_sessions_pool_unless_a_proxy_serves_the_store(filled, fault_proxy):
    """A lean GET is sent on the session's own urllib3 pool for the endpoint (the one boto3's calls
    use); when a proxy serves the endpoint, the request target and headers are the session's to
    make, so it sends the request."""
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    origin, lean = fault_proxy.endpoint, filled._lean
    session = filled.client._endpoint.http_session
    assert lean._pools[origin] is session._manager.connection_from_url(origin)
    lean._pools.clear()
    session._proxy_config._proxies = {"http": "http://127.0.0.1:9"}
    assert lean._pool(origin) is None
    session._proxy_config._proxies = {}  # (so that the request still reaches the store)
    sent, real = [], lean._send
    lean._send = lambda request: sent.append(request.url) or real(request)
    assert get_bytes(filled, KEYS[0]) == b"body 0"
    assert len(sent) == 1 and fault_proxy.requests[-1][2] == "200"
