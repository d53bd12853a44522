"""The request floor of a fleet read (scripts/bench --fleet): the requests `status` makes for each
policy, made by a bare boto3 client and nothing else, so that what drtool adds shows.

For each of N policies (named p00000...): LIST <prefix>/<policy>/backups/ (every page), GET
<prefix>/<policy>/index.json (the body read), LIST .../drills/ and LIST .../checks/. Eight threads
(drtool's fleet reads use eight), one client; the bodies are read, parsed as boto3 parses them
(the LIST's XML), and dropped: no JSON decoding, no records, no output.

    python scripts/bench_floor.py ENDPOINT BUCKET PREFIX N
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

FOLDERS = ("backups", "drills", "checks")


def main() -> None:
    endpoint, bucket, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cfg = Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        max_pool_connections=16,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg)
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


if __name__ == "__main__":
    main()
