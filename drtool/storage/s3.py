"""S3 and S3-compatible stores through boto3: streaming multipart uploads with bounded memory."""

from __future__ import annotations

import datetime as dt
import math
import threading
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import unquote_plus, urlparse

import boto3
import botocore.exceptions as bx
import botocore.session
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.utils import parse_timestamp

from ..errors import NotFound, PreconditionFailed, RetainedByLock, StorageError
from .base import Leftover, ObjectInfo, Store, check_metadata
from .s3lean import LeanReads

_BOTO = (bx.BotoCoreError, bx.ClientError)
MiB = 1024 * 1024
MIN_PART = 8 * MiB  # S3's floor is 5 MiB; 8 MiB matches the AWS CLI default
DEFAULT_PART = 16 * MiB  # without a size hint: up to ~156 GiB in 10,000 parts
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * 1024 * MiB  # S3's limit for one PutObject (conditional writes go up in one)
IN_FLIGHT = 2  # parts uploading concurrently; memory is (IN_FLIGHT + 1) * part size

# Transient S3 answers: worth another attempt. 403 and 404 are permanent (classified in _fail).
_RETRYABLE_CODES = {
    "SlowDown",
    "SlowDownRead",
    "SlowDownWrite",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "503",
    "500",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestLimitExceeded",
}
# The connection failed before an answer arrived: the store was not reached.
_UNREACHABLE = (bx.EndpointConnectionError, bx.ConnectTimeoutError)
# The connection broke after the request went out (a reset, a body cut short): transient.
_BROKEN = (bx.ConnectionClosedError, bx.ResponseStreamingError, bx.IncompleteReadError)
DEFAULT_READ_TIMEOUT = 60  # seconds without a byte from the store (storage.read_timeout)


def _take(pending: deque, size: int) -> bytes:
    """The first `size` bytes of the pieces in `pending`, removed from it, joined in one copy (a
    piece split at the part's end leaves its tail behind as a view, not a copy)."""
    parts = []
    need = size
    while need:
        piece = pending.popleft()
        if len(piece) <= need:
            parts.append(piece)
            need -= len(piece)
        else:
            view = memoryview(piece)
            parts.append(view[:need])
            pending.appendleft(view[need:])
            need = 0
    return b"".join(parts)


def part_size_for(size_hint: int | None) -> int:
    """One fixed part size for the whole upload (some S3 clones require equal parts),
    large enough that `size_hint` bytes fit in 10,000 parts with room to spare."""
    if not size_hint:
        return DEFAULT_PART
    need = math.ceil(size_hint * 1.5 / MAX_PARTS)
    return max(MIN_PART, math.ceil(need / MiB) * MiB)


# One boto3 session and one client per distinct client configuration for the whole process:
# a new session re-parses botocore's data files (about 0.1 s each), which used to cost most of an
# idle fleet tick. Clients are thread-safe, sessions are not: both are made under _CLIENTS_LOCK.
# Credentials come from the process's one credential chain, so they need no place in the key.
_SESSION: boto3.session.Session | None = None
_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()
# Parallel policies (run --jobs) share a client: room for several uploads at once.
POOL_CONNECTIONS = 4 * (IN_FLIGHT + 4)
# Buckets this process has already opened (endpoint, bucket): one HeadBucket per bucket, not per policy.
_BUCKETS_SEEN: set[tuple[str | None, str]] = set()
_BUCKETS_LOCK = threading.Lock()
_LOCK_STATUS: dict[tuple[str | None, str], tuple[bool, str]] = {}


def _timestamp(value: str) -> dt.datetime:
    """A response's timestamp: S3's ISO 8601 ones (every LastModified of a listing) by the standard
    library, about 20 times cheaper than botocore's default (dateutil), which a fleet's listings
    spent ~1 ms a policy on; anything else (RFC 822 headers, epochs) by botocore's own parser."""
    try:
        t = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return parse_timestamp(value)
    return t if t.tzinfo is not None else parse_timestamp(value)


# A listing's XML, handed back whole instead of parsed by botocore (see _keep_listing_raw).
RAW_LISTING = "DrtoolRawListing"
_EMPTY_LISTING = b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></ListBucketResult>'


def _keep_listing_raw(response_dict, customized_response_dict, **_):
    """before-parse of ListObjectsV2 on drtool's clients: a successful listing's XML goes back whole
    under RAW_LISTING, and botocore parses an empty one in its place. botocore's generic parser
    spent ~30 % of a fleet status's CPU on 200-key listings; the C XML parser reads the few fields a
    listing needs (S3Store._page) at a fraction of that. Errors, and 200s that botocore's own
    handler (run first) found to hold one, are parsed as always."""
    if response_dict.get("status_code") == 200:  # an empty body too: _page refuses it, botocore read it as no keys
        customized_response_dict[RAW_LISTING] = response_dict.get("body") or b""
        response_dict["body"] = _EMPTY_LISTING


def shared_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    addressing_style: str,
    request_checksums: str,
    verify: bool | str,
    retry_mode: str,
    max_attempts: int,
    read_timeout: float,
):
    """The process's S3 client for this configuration, created on first use."""
    key = (endpoint_url, region, addressing_style, request_checksums, verify, retry_mode, max_attempts, read_timeout)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            global _SESSION
            if _SESSION is None:
                core = botocore.session.get_session()
                core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
                _SESSION = boto3.session.Session(botocore_session=core)
            cfg = Config(
                region_name=region,
                retries={"mode": retry_mode, "max_attempts": max_attempts},
                # UNSIGNED-PAYLOAD: skip a SHA-256 of every part on plain-http endpoints (HTTPS already
                # skips it); integrity comes from TCP/TLS and the SHA-256 drtool records in the manifest.
                s3={"addressing_style": addressing_style, "payload_signing_enabled": False},
                signature_version="s3v4",  # also for presigned reads (s3lean): botocore presigns with SigV2 otherwise
                request_checksum_calculation=request_checksums,
                response_checksum_validation=request_checksums,
                connect_timeout=10,
                read_timeout=read_timeout,  # also bounds a stalled body: each socket read waits this long
                max_pool_connections=POOL_CONNECTIONS,
            )
            client = _CLIENTS[key] = _SESSION.client("s3", endpoint_url=endpoint_url, config=cfg, verify=verify)
            _hand_listings_back_raw(client)
        return client


def _hand_listings_back_raw(client) -> None:
    """After this, a list_objects_v2 call on `client` answers with RAW_LISTING, not Contents
    (S3Store._page reads it). Idempotent (one unique id); not thread-safe, like any registration:
    call it where the client is made."""
    client.meta.events.register("before-parse.s3.ListObjectsV2", _keep_listing_raw, unique_id=RAW_LISTING)


class S3Store:
    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        addressing_style: str = "auto",
        request_checksums: str = "when_required",
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 5,
        client=None,
        lock_days: int | None = None,
        lock_mode: str = "COMPLIANCE",
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ):
        u = urlparse(url)
        self.bucket = u.netloc
        self.prefix = u.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if client is not None:
            _hand_listings_back_raw(client)
        self.client = client or shared_client(
            endpoint_url=endpoint_url,
            region=region,
            addressing_style=addressing_style,
            request_checksums=request_checksums,
            verify=(ca_bundle or True) if verify_tls else False,
            retry_mode=retry_mode,
            max_attempts=max_attempts,
            read_timeout=read_timeout,
        )
        self._lean = LeanReads(self.client)  # small reads without botocore's per-call work
        self.endpoint = endpoint_url
        self.read_timeout = read_timeout
        self.lock_days = lock_days
        self.lock_mode = lock_mode
        self.versioned = bool(lock_days)  # Object Lock buckets are versioned: deletes must name versions

    # -- errors ----------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, key: str | None, e: BaseException) -> StorageError:
        where = f"{self.url}/{key}" if key else self.url
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return NotFound(f"{self.url}: bucket '{self.bucket}' does not exist")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return NotFound(f"{where}: object not found")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(f"{where}: access denied while trying to {what} ({code})")
            if code in ("PreconditionFailed", "412") or status == 412:
                return PreconditionFailed(f"{where}: changed since it was first read")
            return StorageError(
                f"{where}: cannot {what}: {code} {err.get('Message', '')}".rstrip(),
                retryable=code in _RETRYABLE_CODES or status == 429 or (status or 0) >= 500,
            )
        if isinstance(e, bx.NoCredentialsError):
            return StorageError(
                f"{self.url}: no S3 credentials found (set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role)"
            )
        if isinstance(e, _UNREACHABLE):
            ep = self.endpoint or "AWS"
            return StorageError(f"{self.url}: cannot reach the store at {ep} to {what}", retryable=True)
        if isinstance(e, bx.ReadTimeoutError):
            return StorageError(
                f"{where}: the store sent nothing for {self.read_timeout:g}s while trying to {what} "
                "(storage.read_timeout)",
                retryable=True,
            )
        if isinstance(e, _BROKEN):
            return StorageError(f"{where}: the connection broke while trying to {what}", retryable=True)
        return StorageError(f"{where}: cannot {what}: {e}")

    # -- the five calls --------------------------------------------------------------------
    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        size_hint: int | None = None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        retain: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        part_size = part_size_for(size_hint)
        lock = self._lock_args() if retain else {}
        meta = {"Metadata": check_metadata(metadata)} if metadata else {}
        conditional = bool(if_absent or if_match)
        buf = bytearray()
        it = iter(chunks)
        # small objects (manifests, locks) go up in one request, and so do conditional writes: the
        # condition is checked by PutObject (If-None-Match / If-Match), not by a multipart completion
        for chunk in it:
            buf += chunk
            if conditional and len(buf) > MAX_SINGLE_PUT:
                raise ValueError("conditional writes are for objects up to 5 GiB")
            if not conditional and len(buf) >= part_size:
                return self._multipart(key, buf, it, part_size, {**lock, **meta})
        cond = {"IfNoneMatch": "*"} if if_absent else ({"IfMatch": if_match} if if_match else {})
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(buf), **cond, **lock, **meta)
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if cond and code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise PreconditionFailed(f"{self.url}/{key}: condition not met ({code})") from None
            raise self._fail("write", key, e) from None
        except _BOTO as e:
            raise self._fail("write", key, e) from None
        return ObjectInfo(key, len(buf), etag=r.get("ETag"), metadata=meta.get("Metadata", {}))

    def _lock_args(self) -> dict:
        """Object Lock retention for a new object: mode, and now + lock_days."""
        if not self.lock_days:
            return {}
        import datetime as dt

        until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=self.lock_days)
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": until}

    def _multipart(
        self, key: str, buf: bytearray, it: Iterator[bytes], part_size: int, extra: dict | None = None
    ) -> ObjectInfo:
        """`extra`: create_multipart_upload's Object Lock and Metadata arguments."""
        k = self._key(key)
        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=k, **(extra or {}))["UploadId"]
        except _BOTO as e:
            raise self._fail("start upload of", key, e) from None
        slots = threading.BoundedSemaphore(IN_FLIGHT)
        futures: list[Future] = []
        total = 0
        number = 0

        def upload(n: int, body: bytes) -> dict:
            try:
                r = self.client.upload_part(Bucket=self.bucket, Key=k, UploadId=upload_id, PartNumber=n, Body=body)
                return {"PartNumber": n, "ETag": r["ETag"]}
            finally:
                slots.release()

        # the pieces not sent yet, kept as they came: a part is joined from them in one copy
        pending: deque = deque([bytes(buf)] if buf else [])
        buf.clear()
        waiting = sum(len(p) for p in pending)

        def submit(size: int) -> None:
            """Send the first `size` bytes pending as the next part. The slot is taken before the
            part is joined, so at most IN_FLIGHT parts exist besides the pending pieces."""
            nonlocal number, total, waiting
            number += 1
            if number > MAX_PARTS:
                raise StorageError(
                    f"{self.url}/{key}: stream exceeds {MAX_PARTS} parts of "
                    f"{part_size // MiB} MiB; the size hint was too small"
                )
            slots.acquire()
            for f in futures:  # surface a failed part early
                if f.done() and f.exception():
                    slots.release()
                    raise f.exception()  # type: ignore[misc]
            body = _take(pending, size)
            waiting -= size
            total += len(body)
            futures.append(pool.submit(upload, number, body))

        pool = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="s3-part")
        try:
            for chunk in it:
                pending.append(chunk)
                waiting += len(chunk)
                while waiting >= part_size:
                    submit(part_size)
            if waiting or number == 0:
                submit(waiting)
            parts = [f.result() for f in futures]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=k, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as e:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=k, UploadId=upload_id)
            except _BOTO:
                pass  # prune cleans up uploads that could not be aborted now
            if isinstance(e, _BOTO):
                raise self._fail("upload", key, e) from None
            raise
        finally:
            pool.shutdown(wait=True)
        return ObjectInfo(key, total)

    def get(self, key: str, offset: int = 0, *, if_match: str | None = None) -> _Body:
        if not offset and if_match is None:
            body = self._lean_get(key)
            if body is not None:
                return body
        args: dict = {"Range": f"bytes={offset}-"} if offset else {}
        if if_match is not None:
            args["IfMatch"] = if_match
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **args)
        except _BOTO as e:
            raise self._fail("read", key, e) from None
        body = _Body(r["Body"], self, key, r.get("ETag"), _total_size(r))
        if if_match is not None and body.etag != if_match:  # a server that ignores If-Match
            body.close()
            raise PreconditionFailed(f"{self.url}/{key}: changed since it was first read")
        return body

    def _lean_get(self, key: str) -> _Body | None:
        """A whole object's body read the lean way (s3lean); None: ask boto3."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        r = self._lean.read("get_object", params, stream=True, where=f"{self.url}/{key}")
        if r is None:
            return None
        length = r.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        return _Body(StreamingBody(r.raw, size), self, key, r.headers.get("ETag"), size)

    def stat(self, key: str) -> ObjectInfo:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except _BOTO as e:
            raise self._fail("stat", key, e) from None
        return ObjectInfo(key, r["ContentLength"], etag=r.get("ETag"), modified=r.get("LastModified"),
                          metadata=dict(r.get("Metadata") or {}))  # fmt: skip

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        token: str | None = None
        try:
            while True:
                more = {"ContinuationToken": token} if token else {}
                page = self._lean_list(full, more) or self.client.list_objects_v2(Bucket=self.bucket, Prefix=full,
                                                                                  **more)  # fmt: skip
                objects, token = self._page(page, prefix)
                for key, size, etag, modified in objects:
                    yield ObjectInfo(key[strip:], size, etag=etag, modified=modified)
                if token is None:
                    return
        except StorageError:
            raise
        except _BOTO as e:
            raise self._fail("list", prefix or None, e) from None

    def _lean_list(self, full: str, more: dict) -> dict | None:
        """One listing page read the lean way, as _keep_listing_raw hands it back; None: ask boto3."""
        r = self._lean.read("list_objects_v2", {"Bucket": self.bucket, "Prefix": full, **more}, stream=False)
        return None if r is None else {RAW_LISTING: r.content}

    def _page(self, page: dict, prefix: str) -> tuple[list[tuple], str | None]:
        """One ListObjectsV2 page: [(full key, size, etag, modified)] and the continuation token
        (None: the last page), read from the XML _keep_listing_raw kept."""
        try:
            root = ET.fromstring(page.get(RAW_LISTING) or b"")
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            if root.tag != ns + "ListBucketResult":  # an error document sent with a 200, say
                raise ValueError(f"the answer is <{root.tag[len(ns) :]}>, not a listing")
            url_encoded = root.findtext(ns + "EncodingType") == "url"  # as botocore decodes it
            objects = []
            for c in root.iterfind(ns + "Contents"):
                key, size = c.findtext(ns + "Key"), c.findtext(ns + "Size")
                if key is None or size is None:
                    raise ValueError("an entry without Key or Size")
                stamp = c.findtext(ns + "LastModified")
                objects.append((unquote_plus(key) if url_encoded else key, int(size), c.findtext(ns + "ETag"),
                                _timestamp(stamp) if stamp else None))  # fmt: skip
            truncated = root.findtext(ns + "IsTruncated") == "true"
            token = root.findtext(ns + "NextContinuationToken") if truncated else None
            if truncated and not token:
                raise ValueError("a truncated page without NextContinuationToken")
        except (ET.ParseError, ValueError) as e:
            where = f"{self.url}/{prefix}"
            raise StorageError(f"{where}: the store's listing cannot be read: {e}", retryable=True) from None
        return objects, token

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if self.versioned:
            if if_match and self._etag_or_none(key) not in (None, if_match):
                raise PreconditionFailed(f"{self.url}/{key}: changed since it was read")
            return self._delete_versions(key)
        cond = {"IfMatch": if_match} if if_match else {}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), **cond)
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if cond and code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise PreconditionFailed(f"{self.url}/{key}: condition not met ({code})") from None
            err = self._fail("delete", key, e)
            if not isinstance(err, NotFound) or "bucket" in str(err):
                raise err from None
        except _BOTO as e:
            err = self._fail("delete", key, e)
            if not isinstance(err, NotFound) or "bucket" in str(err):
                raise err from None

    def _etag_or_none(self, key: str) -> str | None:
        try:
            return self.stat(key).etag
        except NotFound:
            return None

    def _delete_versions(self, key: str) -> None:
        """On a versioned (Object Lock) bucket a plain delete only hides the data behind a delete
        marker; remove every version instead, or say until when Object Lock keeps one."""
        k = self._key(key)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=k)
            versions = [v for page in pages for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                        if v["Key"] == k]  # fmt: skip
        except _BOTO as e:
            raise self._fail("list versions of", key, e) from None
        for v in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=k, VersionId=v["VersionId"])
            except bx.ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code in ("AccessDenied", "InvalidRequest", "ObjectLocked"):
                    until = None
                    try:
                        until = self.client.head_object(Bucket=self.bucket, Key=k, VersionId=v["VersionId"]).get(
                            "ObjectLockRetainUntilDate"
                        )
                    except _BOTO:
                        pass
                    raise RetainedByLock(f"{self.url}/{key}: retained by Object Lock until {until}", until) from None
                raise self._fail("delete", key, e) from None
            except _BOTO as e:
                raise self._fail("delete", key, e) from None

    def lock_status(self) -> tuple[bool, str]:
        """(Object Lock usable, detail): the bucket has Object Lock enabled and versioning on.
        Asked once per bucket per process once usable: Object Lock cannot be switched off."""
        where = (self.endpoint, self.bucket)
        if where in _LOCK_STATUS:
            return _LOCK_STATUS[where]
        status = self._read_lock_status()
        if status[0]:  # only a usable answer is kept; a refusal ends the command anyway
            _LOCK_STATUS[where] = status
        return status

    def _read_lock_status(self) -> tuple[bool, str]:
        try:
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except _BOTO as e:
            raise self._fail("read versioning of", None, e) from None
        try:
            cfg = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            enabled = cfg.get("ObjectLockEnabled") == "Enabled"
        except bx.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                raise self._fail("read Object Lock settings of", None, e) from None
            enabled = False
        except _BOTO as e:
            raise self._fail("read Object Lock settings of", None, e) from None
        if not enabled:
            return False, f"bucket '{self.bucket}' has no Object Lock (it must be created with Object Lock enabled)"
        if versioning != "Enabled":
            return False, f"bucket '{self.bucket}' has Object Lock but versioning is {versioning or 'off'}"
        return True, f"bucket '{self.bucket}' has Object Lock and versioning enabled"

    def leftovers(self, prefix: str) -> list[Leftover]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        out = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for u in page.get("Uploads", []):
                    out.append(Leftover(u["Key"][strip:], u["Initiated"], u["UploadId"]))
        except _BOTO as e:
            raise self._fail("list uploads under", prefix, e) from None
        return out

    def discard(self, leftover: Leftover) -> None:
        try:
            key = self._key(leftover.key)
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=leftover.handle)
        except bx.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise self._fail("abort upload of", leftover.key, e) from None
        except _BOTO as e:
            raise self._fail("abort upload of", leftover.key, e) from None

    def copy_from(self, src: Store, key: str, size: int, *, retain: bool = False) -> bool:
        """Server-side copy of src's object to the same key here, when both live behind the same
        endpoint (the data never passes through this host); False when that is not possible."""
        if not isinstance(src, S3Store) or src.endpoint != self.endpoint:
            return False
        from boto3.s3.transfer import TransferConfig

        part = part_size_for(size)
        cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=IN_FLIGHT)
        try:
            self.client.copy({"Bucket": src.bucket, "Key": src._key(key)}, self.bucket, self._key(key),
                             ExtraArgs=self._lock_args() if retain else None, Config=cfg)  # fmt: skip
            copied = self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except _BOTO as e:
            raise self._fail("copy", key, e) from None
        if copied != size:
            raise StorageError(f"{self.url}/{key}: server-side copy has {copied} bytes, expected {size}")
        return True

    def bucket_region(self) -> str | None:
        """The region the bucket lives in (GetBucketLocation); us-east-1 when the answer is empty."""
        try:
            r = self.client.get_bucket_location(Bucket=self.bucket)
        except _BOTO as e:
            raise self._fail("read the region of", None, e) from None
        return r.get("LocationConstraint") or "us-east-1"

    def create_bucket(self, region: str | None) -> bool:
        """Create the bucket (with Object Lock and versioning when this store retains objects);
        False when it already exists and is ours. Checking an existing bucket's settings is
        lock_status()'s job."""
        try:
            self.check_bucket()
            return False
        except NotFound:
            pass
        args: dict = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if self.lock_days:
            args["ObjectLockEnabledForBucket"] = True
        try:
            self.client.create_bucket(**args)
        except bx.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return False  # created by a concurrent init
            if e.response.get("Error", {}).get("Code") == "BucketAlreadyExists":
                raise StorageError(f"{self.url}: bucket name '{self.bucket}' is taken by another account") from None
            raise self._fail("create bucket", None, e) from None
        except _BOTO as e:
            raise self._fail("create bucket", None, e) from None
        if self.lock_days:
            try:
                self.client.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
            except _BOTO as e:
                raise self._fail("enable versioning of", None, e) from None
        return True

    def check_bucket(self) -> None:
        """NotFound unless the bucket exists; once it was found, not asked again in this process."""
        if (self.endpoint, self.bucket) in _BUCKETS_SEEN:
            return
        with _BUCKETS_LOCK:  # threads opening the bucket at once (run's state readers) ask once
            if (self.endpoint, self.bucket) in _BUCKETS_SEEN:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except bx.ClientError as e:
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    raise NotFound(f"{self.url}: bucket '{self.bucket}' does not exist") from None
                raise self._fail("open bucket", None, e) from None
            except _BOTO as e:
                raise self._fail("open bucket", None, e) from None
            _BUCKETS_SEEN.add((self.endpoint, self.bucket))


def _total_size(r: dict) -> int | None:
    """The whole object's size: from Content-Range ('bytes 100-199/200') on a ranged answer."""
    rng = r.get("ContentRange")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    return r.get("ContentLength")


class _Body:
    """The response body as a Reader whose read errors become StorageError (retryable when the
    connection broke or stalled)."""

    def __init__(self, body, store: S3Store, key: str, etag: str | None = None, size: int | None = None):
        self._body, self._store, self._key = body, store, key
        self.etag, self.size = etag, size

    def read(self, n: int = -1) -> bytes:
        try:
            return self._body.read(None if n is None or n < 0 else n)
        except _BOTO as e:
            raise self._store._fail("read", self._key, e) from None

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            b = self.read(1)
            if not b:
                break
            out += b
            if b == b"\n":
                break
        return bytes(out)

    def close(self) -> None:
        try:
            self._body.close()
        except Exception:  # closing a connection that already broke: nothing left to release
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
