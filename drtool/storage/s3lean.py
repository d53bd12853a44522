"""Small S3 reads (a listing page, an object's body) without botocore's per-call machinery.

A fleet read makes thousands of small requests; per request, botocore builds the call through its
event hooks, signs it, checks the reply for a hidden error and parses it, and that cost more CPU
than the store spent answering. Here a read is presigned for the same client (same credentials,
endpoint, addressing style; sigv4.py signs it as botocore would, for a fraction of the CPU), sent
on the client's own HTTP session (same connection pool, TLS settings, proxies and timeouts) and,
when the answer is a plain success, read directly.

Anything else goes the full way: the caller repeats the call through boto3, which retries, maps
errors and says what went wrong. So this path never decides that an error is final, except for a
404 whose body names NoSuchKey (an object that is not there: the index of a policy with no backup
yet, a state object not written yet), which the full path would answer the same way.

botocore has no public way to send a prepared request on a client's session; `_endpoint` is read
once, and without it (another botocore, a stand-in client) every read goes the full way. The GET
itself is sent on the session's own urllib3 pool for the endpoint (its TLS settings, timeouts and
connections), as the session's `send` sends it, without what `send` repeats for every request
(parsing the long signed URL to find the pool and the proxy again). An endpoint behind a proxy,
or a session without those attributes, is sent through `send`.
"""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
from typing import Any

import botocore.exceptions as bx
import urllib3.exceptions as ux
from botocore.awsrequest import AWSRequest, AWSResponse
from urllib3.util.retry import Retry

from ..errors import NotFound
from .sigv4 import presigner

EXPIRES = 300  # seconds a presigned read stays valid: it is sent at once
# answers after which this store reads the full way: presigned reads refused (403), or addressed
# to the wrong region or endpoint (301, 400), which boto3 follows and remembers and this path does not
OFF = (301, 400, 403)


class LeanReads:
    def __init__(self, client):
        session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        config = getattr(getattr(client, "meta", None), "config", None)
        # a client that validates response checksums must see every GET itself
        validating = getattr(config, "response_checksum_validation", "when_required") != "when_required"
        self._send = None if validating else getattr(session, "send", None)
        self._session = session
        self._client = client
        self._pools: dict[str, Any] = {}  # origin -> the session's urllib3 pool for it; None: through `send`

    @property
    def usable(self) -> bool:
        return self._send is not None

    def read(self, operation: str, params: dict, *, stream: bool, where: str | None = None) -> AWSResponse | None:
        """The store's 200 to `operation` (a GET: list_objects_v2, get_object) with `params`, or
        None: the caller asks boto3, which alone retries and decides an error. Only a 404
        NoSuchKey is final here: NotFound naming `where` (the object), as boto3 would say. A 403,
        301 or 400 turns this path off for good: a store that refuses presigned reads, or a bucket
        in another region than configured, costs one request.
        The URL is never shown: it carries a signature, and a session token when there is one."""
        if self._send is None:
            return None
        try:
            signer = presigner(self._client, params["Bucket"], EXPIRES)
            url = signer.url(operation, params, EXPIRES) if signer is not None else None
            url = url or self._client.generate_presigned_url(operation, Params=params, ExpiresIn=EXPIRES)
            r = self._get(url, stream)
        except (bx.BotoCoreError, ux.HTTPError, http.client.HTTPException, OSError):
            return None
        if r.status_code == 200:
            return r
        try:
            code = _error_code(r.content) if r.status_code == 404 else None
        except Exception:  # the error's body broke off: boto3 asks again
            code = None
        _discard(r)
        if code == "NoSuchKey" and where is not None:
            raise NotFound(f"{where}: object not found")
        if r.status_code in OFF:
            self._send = None
        return None

    def _get(self, url: str, stream: bool) -> AWSResponse:
        """The GET of `url` as the session sends it (botocore's URLLib3Session.send), on its pool."""
        path = url.index("/", url.index("//") + 2)
        pool = self._pool(url[:path])
        if pool is None:
            assert self._send is not None
            return self._send(AWSRequest(method="GET", url=url, stream_output=stream).prepare())
        raw = pool.urlopen("GET", url[path:], retries=Retry(False), assert_same_host=False, preload_content=False,
                           decode_content=False, enforce_content_length=False)  # fmt: skip
        r = AWSResponse(url, raw.status, raw.headers, raw)
        if not stream:
            _ = r.content  # read whole now, as the session does: the connection goes back to the pool
        return r

    def _pool(self, origin: str) -> Any:
        if origin in self._pools:
            pool = self._pools[origin]
            if pool is None or pool.pool is not None:  # a pool its manager closed has none: look it up again
                return pool
        s = self._session
        try:
            if s._proxy_config.proxy_url_for(origin):  # a proxy's request target and headers: `send` makes them
                pool = None
            else:
                pool = s._manager.connection_from_url(origin)
                s._setup_ssl_cert(pool, origin, s._verify)
        except AttributeError:  # another botocore: through `send`
            pool = None
        self._pools[origin] = pool
        return pool


def _error_code(body: bytes) -> str | None:
    """The Code of an S3 error document, None when the body is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    return root.findtext("Code") if root.tag == "Error" else None


def _discard(response: AWSResponse) -> None:
    """Let go of an answer this path does not use (its connection goes back to the pool when
    the body was read, or is closed)."""
    try:
        response.raw.close()
    except Exception:  # a connection that already broke: nothing left to release
        pass
