"""WAL archiving into the store (issue 12 points 2-3): a real PostgreSQL 15 runs `drtool wal push`
as its archive_command against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import boto3
import pytest

from drtool import walnames


def s3_object(seaweed, bucket: str, key: str) -> dict:
    c = boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1")
    return c.get_object(Bucket=bucket, Key=key)


def store_key(cluster, name: str) -> tuple[str, str]:
    """(bucket, full key) of an archived file of this cluster."""
    bucket, prefix = cluster.store_url[len("s3://") :].split("/", 1)
    return bucket, f"{prefix}/{walnames.key_for(cluster.policy_name, cluster.sysid(), name)}"


def test_segments_archived_by_postgres_decrypt_with_stock_age_and_zstd(pitr, seaweed):
    pitr.pg.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
    name = pitr.switch_wal()
    pitr.wait_archived(name)
    original = (pitr.pg_wal / name).read_bytes()  # not recycled before the next checkpoint
    bucket, key = store_key(pitr, name)
    obj = s3_object(seaweed, bucket, key)
    stored = obj["Body"].read()
    plain = subprocess.run(f"age -d -i {pitr.key} | zstd -d", shell=True, input=stored, capture_output=True,
                           check=True).stdout  # fmt: skip
    assert plain == original
    meta = obj["Metadata"]
    assert meta["sha256"] == hashlib.sha256(original).hexdigest() and meta["size"] == str(len(original))
    assert meta["sysid"] == str(pitr.sysid()) and meta["end"].endswith("Z")
    cluster = json.loads(s3_object(seaweed, bucket, key.split("/wal/")[0] + "/wal/cluster.json")["Body"].read())
    assert cluster["sysid"] == str(pitr.sysid()) and cluster["wal_segment_size"] == 16 * 1024 * 1024
    assert cluster["pg_version"] == "15" and cluster["version"] == 1


@pytest.mark.parametrize("bad", ["000000010000000000000001.tmp", "../000000010000000000000001", "RECOVERYXLOG"])
def test_a_name_postgres_would_never_archive_is_refused_with_exit_1(pitr, bad, tmp_path):
    r = pitr.as_postgres("wal", "push", "--policy", str(pitr.policy), f"pg_wal/{bad}")
    assert r.returncode == 1, r
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
