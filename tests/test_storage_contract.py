"""One contract, run against every store: the local folder and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import uuid

import pytest

from drtool.errors import NotFound, PreconditionFailed, StorageError
from drtool.policy import StorageTarget
from drtool.storage import (
    CAPABILITIES,
    BucketAdmin,
    LocalStore,
    LockInspector,
    RetryingStore,
    RootCreator,
    ServerCopy,
    get_bytes,
    open_store,
    put_bytes,
)
from drtool.storage import retry as retrymod
from drtool.storage import s3 as s3mod
from drtool.storage.retry import unwrap


def s3_store(url: str, endpoint: str):
    return open_store(StorageTarget(url=url, endpoint_url=endpoint, region="us-east-1", addressing_style="path"))


@pytest.fixture(
    params=["local", pytest.param("s3", marks=pytest.mark.integration), "retrying-local",
            pytest.param("retrying-s3", marks=pytest.mark.integration)]
)  # fmt: skip
def store(request, tmp_path):
    """Each store, and each as the app uses it (wrapped in RetryingStore; faults on the wrapped S3
    store are exercised in test_reads.py): all keep the contract."""
    if request.param.endswith("local"):
        inner = LocalStore(tmp_path / "store")
        inner.create_root()  # what `drtool init` does
    else:
        seaweed = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("bucket")
        prefix = request.getfixturevalue("s3_prefix")
        inner = s3_store(f"s3://{bucket}/{prefix}", seaweed.endpoint)
    return RetryingStore(inner) if request.param.startswith("retrying") else inner


def test_put_then_get_returns_same_bytes(store):
    put_bytes(store, "a/b/c.bin", b"hello world")
    assert get_bytes(store, "a/b/c.bin") == b"hello world"
    assert store.stat("a/b/c.bin").size == 11


def test_overwrite_replaces_whole_object(store):
    put_bytes(store, "k", b"first version, long")
    put_bytes(store, "k", b"second")
    assert get_bytes(store, "k") == b"second"


def test_missing_object_raises_not_found(store):
    with pytest.raises(NotFound) as e:
        store.get("nope")
    assert e.value.retryable is False  # permanent: a wrapper must not retry it
    with pytest.raises(NotFound):
        store.stat("nope")


def test_delete_is_idempotent(store):
    put_bytes(store, "x/y", b"1")
    store.delete("x/y")
    store.delete("x/y")
    with pytest.raises(NotFound):
        store.stat("x/y")


def test_list_filters_by_prefix_in_key_order(store):
    for k in ["p/2", "p/1", "p/sub/3", "q/4"]:
        put_bytes(store, k, k.encode())
    assert [o.key for o in store.list_objects("p/")] == ["p/1", "p/2", "p/sub/3"]
    assert [o.size for o in store.list_objects("q/")] == [3]


def test_a_prefix_that_ends_inside_a_name_lists_every_key_that_starts_with_it(store):
    keys = ["pol/backups/20261130T0100Z-a/manifest.json", "pol/backups/20261130T0100Z-a/dump.zst.age",
            "pol/backups/20261130T0200Z-b/manifest.json", "pol/backups/20261201T0100Z-c/manifest.json",
            "pol/backupsX/20261130/manifest.json", "pol/index.json", "other/backups/20261130/x"]  # fmt: skip
    for k in keys:
        put_bytes(store, k, b"x")
    assert [o.key for o in store.list_objects("pol/backups/202611")] == sorted(keys[:3])
    assert [o.key for o in store.list_objects("pol/backups/")] == sorted(keys[:4])
    assert [o.key for o in store.list_objects("pol/backups")] == sorted(keys[:5])
    assert [o.key for o in store.list_objects("")] == sorted(keys)
    assert list(store.list_objects("nothing/here/")) == []


def test_keys_with_spaces_plus_signs_percents_and_non_ascii_list_as_written(store):
    """S3 listings come URL-encoded (boto3 asks for it); drtool reads them without botocore's parser
    (s3._keep_listing_raw), so it must decode them exactly as botocore would."""
    keys = ["odd/a b+c%20d.json", "odd/ünï/çødé€.txt", "odd/&<>\"'.x", "odd/tab\there"]
    for k in keys:
        put_bytes(store, k, k.encode())
    listed = list(store.list_objects("odd/"))
    assert [o.key for o in listed] == sorted(keys)
    assert [o.size for o in listed] == [len(o.key.encode()) for o in listed]
    assert all(o.etag and o.modified and o.modified.tzinfo for o in listed)


def test_streamed_multipart_upload_round_trips(store, monkeypatch):
    monkeypatch.setattr(s3mod, "MIN_PART", 5 * 1024 * 1024)
    chunk = os.urandom(1024 * 1024)
    pieces = [chunk] * 12 + [b"tail"]  # > 2 parts of 5 MiB, last part short
    info = store.put("big/obj", iter(pieces), size_hint=1)
    assert info.size == 12 * len(chunk) + 4
    assert get_bytes(store, "big/obj") == b"".join(pieces)


def test_failing_stream_leaves_no_visible_object(store, monkeypatch):
    monkeypatch.setattr(s3mod, "MIN_PART", 5 * 1024 * 1024)

    def pieces():
        for _ in range(11):
            yield os.urandom(1024 * 1024)
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        store.put("broken/obj", pieces(), size_hint=1)
    assert list(store.list_objects("broken/")) == []
    with pytest.raises(NotFound):
        store.stat("broken/obj")


def test_folder_store_never_creates_its_own_root(tmp_path):
    """Only `drtool init` makes the root: a write into a missing (unmounted) one fails."""
    store = LocalStore(tmp_path / "unmounted" / "store")
    with pytest.raises(StorageError, match="store folder does not exist"):
        put_bytes(store, "p/backups/x/manifest.json", b"1")
    with pytest.raises(StorageError, match="store folder does not exist"):
        store.put("p/locks/policy.lock", [b"1"], if_absent=True)
    assert not (tmp_path / "unmounted").exists()
    assert store.create_root() is True and store.create_root() is False
    put_bytes(store, "p/backups/x/manifest.json", b"1")


def test_invalid_or_escaping_keys_are_refused(tmp_path):
    store = LocalStore(tmp_path / "s")
    for bad in ["../x", "a//b", "", "a/./b"]:
        with pytest.raises(StorageError):
            put_bytes(store, bad, b"1")


def test_part_size_grows_with_stream_and_stays_under_part_limit():
    assert s3mod.part_size_for(None) == s3mod.DEFAULT_PART
    assert s3mod.part_size_for(100) == s3mod.MIN_PART
    one_tib = 1 << 40
    size = s3mod.part_size_for(one_tib)
    assert size % (1024 * 1024) == 0
    assert one_tib / size < s3mod.MAX_PARTS


def test_missing_bucket_is_named(seaweed):
    store = s3_store(f"s3://no-such-{uuid.uuid4().hex[:8]}/p", seaweed.endpoint)
    with pytest.raises(NotFound, match="bucket 'no-such-"):
        store.check_bucket()
    # (SeaweedFS creates a bucket on first PutObject, so drtool checks the bucket before writing.)


def test_unreachable_store_is_a_clear_error():
    from services import free_port

    store = s3_store("s3://some-bucket/p", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="cannot reach the store"):
        list(store.list_objects(""))


def test_503_on_third_part_aborts_upload_and_leaves_nothing(seaweed, bucket, s3_prefix, monkeypatch):
    """A fault a real server will not produce on demand: the third part fails with a 503."""
    import botocore.exceptions

    monkeypatch.setattr(s3mod, "MIN_PART", 5 * 1024 * 1024)
    store = s3_store(f"s3://{bucket}/{s3_prefix}", seaweed.endpoint)
    real = store.client.upload_part
    calls = []

    def flaky(**kw):
        calls.append(kw["PartNumber"])
        if kw["PartNumber"] == 3:
            raise botocore.exceptions.ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable", "Message": "Please reduce your request rate."},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "UploadPart",
            )
        return real(**kw)

    monkeypatch.setattr(store.client, "upload_part", flaky)
    pieces = (os.urandom(1024 * 1024) for _ in range(30))
    # through the wrapper the app uses: a write is not retried (its stream is spent), it fails once
    with pytest.raises(StorageError, match="ServiceUnavailable"):
        RetryingStore(store).put("obj", pieces, size_hint=1)
    assert calls == [1, 2, 3]
    assert list(store.list_objects("")) == []
    assert not store.client.list_multipart_uploads(Bucket=bucket, Prefix=s3_prefix).get("Uploads")


def test_conditional_create_has_one_winner(store):
    from drtool.errors import PreconditionFailed

    first = store.put("locks/a", [b"one"], if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put("locks/a", [b"two"], if_absent=True)
    assert get_bytes(store, "locks/a") == b"one"
    assert first.etag and store.stat("locks/a").etag == first.etag


def test_replace_only_if_unchanged(store):
    from drtool.errors import PreconditionFailed

    v1 = store.put("state", [b"v1"])
    v2 = store.put("state", [b"v2"], if_match=store.stat("state").etag)
    with pytest.raises(PreconditionFailed):
        store.put("state", [b"v3"], if_match=v1.etag if v1.etag != v2.etag else "stale")
    assert get_bytes(store, "state") == b"v2"


def test_conditional_delete_removes_only_the_version_it_read(store):
    from drtool.errors import NotFound, PreconditionFailed

    v1 = store.put("locks/b", [b"mine"])
    v2 = store.put("locks/b", [b"someone else's"])
    with pytest.raises(PreconditionFailed):
        store.delete("locks/b", if_match=v1.etag if v1.etag != v2.etag else "stale")
    assert get_bytes(store, "locks/b") == b"someone else's"
    store.delete("locks/b", if_match=store.stat("locks/b").etag)
    with pytest.raises(NotFound):
        store.stat("locks/b")


def test_listing_pages_past_a_thousand_objects(store):
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"many/{i:05d}" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: put_bytes(store, k, b"x"), keys))
    assert [o.key for o in store.list_objects("many/")] == keys


def test_interrupted_upload_is_a_leftover_until_discarded(store, monkeypatch):
    monkeypatch.setattr(s3mod, "MIN_PART", 5 * 1024 * 1024)
    inner = unwrap(store)
    if isinstance(inner, LocalStore):  # a writer killed mid-write leaves its temp file
        (inner.root / "b").mkdir(parents=True)
        (inner.root / "b" / ".tmp-deadbeef").write_bytes(b"partial")
    else:  # a process killed mid-upload leaves its multipart upload
        k = inner._key("b/obj")
        inner.client.create_multipart_upload(Bucket=inner.bucket, Key=k)
    found = store.leftovers("b/")
    assert [x.key.split("/")[0] for x in found] == ["b"]
    assert list(store.list_objects("b/")) == []  # never visible as an object
    for x in found:
        store.discard(x)
    assert store.leftovers("b/") == []


def test_ranged_read_returns_the_tail_of_the_same_version(store):
    put_bytes(store, "r/obj", b"0123456789")
    with store.get("r/obj") as whole:
        assert whole.read() == b"0123456789"
        etag, size = whole.etag, whole.size
    assert etag and etag == store.stat("r/obj").etag
    assert size == 10
    with store.get("r/obj", 4, if_match=etag) as tail:
        assert tail.read() == b"456789"
        assert (tail.etag, tail.size) == (etag, 10)  # the whole object's size, not the range's


def test_ranged_read_of_a_replaced_object_is_refused(store):
    from drtool.errors import PreconditionFailed

    put_bytes(store, "r/obj", b"first version")
    with store.get("r/obj") as first:
        etag = first.etag
    put_bytes(store, "r/obj", b"second version")
    with pytest.raises(PreconditionFailed, match="r/obj"):
        store.get("r/obj", 6, if_match=etag)


# -- optional capabilities (storage/base.py): what each store has, and a wrapper has the same ----------

EXPECTED_CAPABILITIES = {LocalStore: {RootCreator}, s3mod.S3Store: {BucketAdmin, LockInspector, ServerCopy}}


def test_each_store_has_exactly_its_documented_capabilities(store):
    inner = unwrap(store)
    assert {c for c in CAPABILITIES if isinstance(inner, c)} == EXPECTED_CAPABILITIES[type(inner)]


def test_wrapper_forwards_only_the_capabilities_of_the_store_underneath(store):
    """A RetryingStore around a folder store is no BucketAdmin or ServerCopy, so the app never
    asks a folder for its bucket or tries a server-side copy from it."""
    assert {c for c in CAPABILITIES if isinstance(store, c)} == EXPECTED_CAPABILITIES[type(unwrap(store))]
    if store is not unwrap(store):  # nor the inner store's internals
        for internal in ("root", "client", "prefix", "_path", "_k"):
            assert not hasattr(store, internal), internal


def test_wrapper_forwards_every_member_of_every_capability():
    members = {name for cap in CAPABILITIES for name in cap.__dict__.get("__annotations__", {})}
    members |= {name for cap in CAPABILITIES for name, v in vars(cap).items() if callable(v) and name[0] != "_"}
    assert members == retrymod._FORWARDED


def test_metadata_is_stored_with_the_object_and_returned_by_stat(store):
    meta = {"sha256": "ab" * 32, "size": "16777216", "end": "2024-05-01T10:00:00Z", "sysid": "7312345678901234567"}
    info = store.put("wal/seg.zst.age", [b"cipher"], metadata=meta)
    assert info.size == 6
    assert store.stat("wal/seg.zst.age").metadata == meta
    assert [o.key for o in store.list_objects("wal/")] == ["wal/seg.zst.age"]  # no sidecar or header object
    assert get_bytes(store, "wal/seg.zst.age") == b"cipher"
    put_bytes(store, "wal/seg.zst.age", b"rewritten")  # a rewrite without metadata has none
    assert store.stat("wal/seg.zst.age").metadata == {}
    store.delete("wal/seg.zst.age")
    assert list(store.list_objects("wal/")) == []


def test_create_only_write_of_a_segment_sized_object_keeps_the_first_version_and_its_metadata(store):
    """WAL is written create-only whatever its size: a conditional write larger than a multipart
    part still goes up (in one request) and the condition still holds."""
    body = os.urandom(17 * 1024 * 1024)
    store.put("wal/big", iter([body[: 1 << 20], body[1 << 20 :]]), if_absent=True, metadata={"sha256": "1"})
    with pytest.raises(PreconditionFailed):
        store.put("wal/big", [b"other"], if_absent=True, metadata={"sha256": "2"})
    assert store.stat("wal/big").metadata == {"sha256": "1"}
    assert get_bytes(store, "wal/big") == body


def test_metadata_keys_s3_would_mangle_are_refused_before_writing(store):
    for bad in ({"SHA256": "x"}, {"sha256": "ünï"}, {"a b": "x"}):
        with pytest.raises(ValueError):
            store.put("wal/bad", [b"1"], metadata=bad)
    with pytest.raises(NotFound):
        store.stat("wal/bad")


def test_folder_store_ignores_metadata_of_another_version(tmp_path):
    """A crash after the sidecar was written but before the object was renamed leaves a sidecar
    for a version that never appeared: it must not be read as the current object's metadata."""
    store = LocalStore(tmp_path / "s")
    store.create_root()
    store.put("p/obj", [b"v1"], metadata={"sha256": "one"})
    side = tmp_path / "s" / "p" / ".meta-obj"
    doc = side.read_text().replace('"one"', '"two"')
    put_bytes(store, "p/obj", b"v2")
    side.write_text(doc)  # the stale sidecar of v1's etag, now beside v2
    assert store.stat("p/obj").metadata == {}
    with pytest.raises(StorageError):
        put_bytes(store, "p/.meta-obj", b"x")  # keys cannot name a sidecar


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"<ListBucketResult><Contents><Key>p/x</Key></Contents></ListBucketResult>", "without Key or Size"),
        (b"<ListBucketResult><Contents><Key>p/x</Key><Size>ten</Size></Contents></ListBucketResult>", "ten"),
        (b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>", "without NextContinuationToken"),
        (b"", "no element found"),  # an empty 200: botocore's parse read it as a folder with no keys
        (b"<Error><Code>InternalError</Code></Error>", "the answer is <Error>, not a listing"),  # sent with a 200
        (b"<ListBucketResult><Contents>", "no element found"),  # cut short without a reset
    ],
)
def test_a_listing_drtool_cannot_read_is_a_storage_error_naming_the_prefix(body, problem):
    """A 200 whose body is not a usable listing (a server will not send one on demand): lean reads
    (storage/s3lean.py) hand drtool the body as it came, without botocore's 200-error check."""
    store = s3mod.S3Store("s3://bkt/pre", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(
        StorageError, match=rf"^s3://bkt/pre/pol/backups/: the store's listing cannot be read: .*{problem}"
    ):
        store._page({s3mod.RAW_LISTING: body}, "pol/backups/")
