"""Object stores: the only importer of boto3. open_store() builds one from a policy target."""

from __future__ import annotations

from urllib.parse import urlparse

from .base import (
    CAPABILITIES,
    BucketAdmin,
    LockInspector,
    ObjectInfo,
    Reader,
    RootCreator,
    ServerCopy,
    Store,
    get_bytes,
    put_bytes,
)
from .local import LocalStore
from .retry import RetryingStore


def open_store(target) -> Store:
    """A Store for a policy StorageTarget (s3:// or file://)."""
    u = urlparse(target.url)
    if u.scheme == "file":
        return LocalStore(u.path, url=target.url)
    from .s3 import S3Store

    return S3Store(
        target.url,
        region=target.region,
        endpoint_url=target.endpoint_url,
        addressing_style=target.addressing_style,
        request_checksums=target.request_checksums,
        verify_tls=target.verify_tls,
        retry_mode=target.retry_mode,
        max_attempts=target.max_attempts,
        ca_bundle=target.ca_bundle,
        lock_days=target.object_lock_days,
        lock_mode=target.object_lock_mode,
        read_timeout=target.read_timeout,
    )


__all__ = ["ObjectInfo", "Reader", "Store", "LocalStore", "RetryingStore", "open_store", "get_bytes", "put_bytes",
           "CAPABILITIES", "RootCreator", "BucketAdmin", "LockInspector", "ServerCopy"]  # fmt: skip
