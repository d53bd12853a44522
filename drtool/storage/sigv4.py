"""Presigned GET URLs (AWS Signature Version 4, query-string form) for the lean reads, made without
botocore's per-call machinery, and used only after they match botocore's own for the same client.

botocore's generate_presigned_url costs about 0.5 ms a call (building the request through its
event hooks, resolving the endpoint ruleset, then signing); a fleet read makes thousands of them,
and the signature itself is a SHA-256 and one HMAC with a key that changes once a day.

So, once per client and bucket, botocore presigns two samples: a GET of an object and a listing
page, with keys that need escaping. Their URLs give the address (endpoint and addressing style),
the signing region, the fixed query parameters (list-type, encoding-type) and the session token.
This signer must then rebuild both URLs exactly, signature included, at the same time stamp. If
it cannot (another signature version, a signer or parameter botocore was customised with, a
client without plain credentials), it is not used and every read is presigned by botocore.
Credentials are read from the client at each signature, so refreshed ones are used.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNED = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
          "X-Amz-Security-Token", "X-Amz-Signature")  # fmt: skip
# the listing parameters drtool sends, by their names in the URL
LIST_PARAMS = {"Prefix": "prefix", "ContinuationToken": "continuation-token", "StartAfter": "start-after"}
SAMPLE_KEY = "drtool sample/~ é+%&=.json"  # keys and prefixes with characters that need escaping
SAMPLE_LIST = {"Prefix": "drtool sample/~ é+%&=/", "ContinuationToken": "a+b/c= d"}


def _escape(text: str) -> str:
    """URI encoding as SigV4 wants it in a query: everything but unreserved characters."""
    return quote(text, safe="-_.~")


class Presigner:
    """Signs GETs for one client and bucket, in the form botocore's samples showed."""

    def __init__(self, credentials: Any, origin: str, host: str, object_base: str, list_path: str,
                 list_fixed: list[tuple[str, str]], region: str):  # fmt: skip
        self._credentials = credentials
        self._origin, self._host = origin, host  # scheme://netloc, and the host header botocore signs
        self._object_base, self._list_path, self._list_fixed = object_base, list_path, list_fixed
        self._region = region
        self._keys: tuple[str, str, bytes] | None = None  # (secret, day, signing key) last used

    def url(self, operation: str, params: dict[str, Any], expires: int, stamp: str | None = None) -> str | None:
        """The presigned URL, or None for a request this signer does not make (the caller presigns
        it with botocore). `stamp` (YYYYMMDDTHHMMSSZ) defaults to now."""
        if operation == "get_object" and params.keys() == {"Bucket", "Key"} and params["Key"]:  # "": the bucket
            path, query = self._object_base + quote(params["Key"], safe="/~"), []
        elif operation == "list_objects_v2" and params.keys() - {"Bucket"} <= LIST_PARAMS.keys():
            path = self._list_path
            query = [*self._list_fixed, *((LIST_PARAMS[k], str(v)) for k, v in params.items() if k != "Bucket")]
        else:
            return None
        creds = self._credentials.get_frozen_credentials()
        stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        scope = f"{stamp[:8]}/{self._region}/s3/aws4_request"
        query += [("X-Amz-Algorithm", ALGORITHM), ("X-Amz-Credential", f"{creds.access_key}/{scope}"),
                  ("X-Amz-Date", stamp), ("X-Amz-Expires", str(expires)), ("X-Amz-SignedHeaders", "host")]  # fmt: skip
        if creds.token:
            query.append(("X-Amz-Security-Token", creds.token))
        canonical_query = "&".join(f"{_escape(k)}={_escape(v)}" for k, v in sorted(query))
        canonical = f"GET\n{path}\n{canonical_query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, stamp[:8]), to_sign.encode(), hashlib.sha256)
        return f"{self._origin}{path}?{canonical_query}&X-Amz-Signature={signature.hexdigest()}"

    def _signing_key(self, secret: str, day: str) -> bytes:
        keys = self._keys  # one tuple, read and replaced whole: safe across threads
        if keys is None or keys[0] != secret or keys[1] != day:
            k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self._region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            keys = self._keys = (secret, day, k)
        return keys[2]


def _parts(url: str) -> tuple[str, str, str, dict[str, str]]:
    """(scheme://netloc, path, raw query, {name: value}) of a URL; ValueError on a repeated name."""
    u = urlsplit(url)
    pairs = parse_qsl(u.query, keep_blank_values=True)
    query = dict(pairs)
    if len(query) != len(pairs):
        raise ValueError("a parameter is repeated")
    return f"{u.scheme}://{u.netloc}", u.path, u.query, query


def _same(ours: str | None, theirs: str) -> bool:
    """The same URL up to the order of its query parameters."""
    if ours is None:
        return False
    a, b = urlsplit(ours), urlsplit(theirs)
    return a[:3] == b[:3] and sorted(a.query.split("&")) == sorted(b.query.split("&"))


def _learn(client: Any, bucket: str, expires: int) -> Presigner | None:
    """A Presigner for (client, bucket) whose URLs are botocore's, or None."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None or not hasattr(credentials, "get_frozen_credentials"):
        return None  # no credentials (anonymous), or a client that keeps them elsewhere
    get = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": SAMPLE_KEY}, ExpiresIn=expires)
    listing = client.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket, **SAMPLE_LIST},
                                            ExpiresIn=expires)  # fmt: skip
    origin, get_path, _, get_query = _parts(get)
    list_origin, list_path, _, list_query = _parts(listing)
    escaped = quote(SAMPLE_KEY, safe="/~")
    if list_origin != origin or not get_path.endswith("/" + escaped) or get_query.get("X-Amz-Algorithm") != ALGORITHM:
        return None
    credential = get_query.get("X-Amz-Credential", "").split("/")
    if len(credential) != 5 or credential[3:] != ["s3", "aws4_request"]:
        return None
    scheme, netloc = urlsplit(get)[:2]
    host = netloc.rsplit(":", 1)[0] if netloc.endswith({"http": ":80", "https": ":443"}.get(scheme, "\0")) else netloc
    fixed = [(k, v) for k, v in list_query.items() if k not in SIGNED and k not in LIST_PARAMS.values()]
    if set(get_query) - set(SIGNED):
        return None  # botocore added a parameter to the GET that this signer would not send
    signer = Presigner(credentials, origin, host, get_path[: -len(escaped)], list_path, fixed, credential[2])
    ok = _same(signer.url("get_object", {"Bucket": bucket, "Key": SAMPLE_KEY}, expires, get_query["X-Amz-Date"]), get)
    stamp = list_query.get("X-Amz-Date")
    ok = ok and _same(signer.url("list_objects_v2", {"Bucket": bucket, **SAMPLE_LIST}, expires, stamp), listing)
    return signer if ok else None


_LEARNT: weakref.WeakKeyDictionary[Any, dict[str, Presigner | None]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def presigner(client: Any, bucket: str, expires: int) -> Presigner | None:
    """The client's Presigner for `bucket` (learnt on first use, once per process), or None:
    presign with botocore."""
    with _LOCK:
        known = _LEARNT.setdefault(client, {})
        if bucket not in known:
            try:
                known[bucket] = _learn(client, bucket, expires)
            except Exception:  # any surprise in botocore's samples: botocore presigns every read
                known[bucket] = None
        return known[bucket]
