"""The request floor of a fleet read (scripts/bench --fleet): the requests `status` makes for each
policy, made by a bare boto3 client and nothing else, so that what drtool adds shows.

For each of N policies (named p00000...): LIST <prefix>/<policy>/backups/ (every page), GET
<prefix>/<policy>/index.json (the body read), LIST .../drills/ and LIST .../checks/. Eight threads
(drtool's fleet reads use eight), one client; the bodies are read, parsed as boto3 parses them
(the LIST's XML), and dropped: no JSON decoding, no records, no output.

--raw makes the same requests with the leanest client: URLs presigned by boto3 up front (its
cheapest call, ~0.2 ms), sent by urllib3, listings read by the C XML parser. What is left is the
store's own cost and little else: the floor any client of this layout pays on these cores.

    python scripts/bench_floor.py ENDPOINT BUCKET PREFIX N [--raw]
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import boto3
import urllib3
from botocore.config import Config

FOLDERS = ("backups", "drills", "checks")


def main() -> None:
    endpoint, bucket, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    raw = "--raw" in sys.argv[5:]
    cfg = Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        max_pool_connections=16,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
    if raw:
        return lean(client, bucket, prefix, n)
    pages = client.get_paginator("list_objects_v2")

    def one(i: int) -> int:
        base = f"{prefix}/p{i:05d}"
        keys = 0
        for folder in FOLDERS:
            for page in pages.paginate(Bucket=bucket, Prefix=f"{base}/{folder}/"):
                keys += len(page.get("Contents", []))
        client.get_object(Bucket=bucket, Key=f"{base}/index.json")["Body"].read()
        return keys

    with ThreadPoolExecutor(8) as pool:
        keys = sum(pool.map(one, range(n)))
    print(f"{n} policies, {keys} keys listed")


def lean(client, bucket: str, prefix: str, n: int) -> None:
    """The same requests, presigned, sent by urllib3 and read by the C XML parser (one page each:
    the bench's listings hold under 1,000 keys)."""
    urls = []
    for i in range(n):
        base = f"{prefix}/p{i:05d}"
        for folder in FOLDERS:
            params = {"Bucket": bucket, "Prefix": f"{base}/{folder}/"}
            urls.append(("list", client.generate_presigned_url("list_objects_v2", Params=params)))
        urls.append(
            ("get", client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": f"{base}/index.json"}))
        )
    http = urllib3.PoolManager(maxsize=16)
    tag = "{http://s3.amazonaws.com/doc/2006-03-01/}Contents"

    def one(item: tuple[str, str]) -> int:
        kind, url = item
        r = http.request("GET", url)
        if r.status != 200:
            raise SystemExit(f"bench_floor: {r.status} for {url.split('?')[0]}")
        return len(ET.fromstring(r.data).findall(tag)) if kind == "list" else 0

    with ThreadPoolExecutor(8) as pool:
        keys = sum(pool.map(one, urls))
    print(f"{n} policies, {keys} keys listed (lean client)")


if __name__ == "__main__":
    main()
