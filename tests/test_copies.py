"""Copies to other storage targets ([[storage.copies]]): made after each backup commits, each
with its own manifest, retried when a target is down, restorable and drillable on their own,
pruned by the same rules, and refused when a bucket is not in its declared region."""

from __future__ import annotations

import json
import re

import pytest
from helpers import make_setup
from services import free_port

pytestmark = pytest.mark.integration


def copy_toml(seaweed, bucket, prefix, region="us-east-1", endpoint=None) -> str:
    return (f'[[storage.copies]]\nname = "dr"\nurl = "s3://{bucket}/{prefix}-dr"\nregion = "{region}"\n'
            f'endpoint_url = "{endpoint or seaweed.endpoint}"\n')  # fmt: skip


@pytest.fixture
def setup(pg, tmp_path, seaweed, bucket, s3_prefix, scratch_root):
    storage = f'[storage]\nurl = "file://{tmp_path}/store"\n' + copy_toml(seaweed, bucket, s3_prefix)
    s = make_setup(pg, tmp_path, storage, extra_toml="[retention]\nkeep_last = 1\n")
    s.env["TMPDIR"] = str(scratch_root)
    return s


def ids(setup, *extra: str) -> list[str]:
    r = setup.cli("list", "-p", str(setup.policy), "--json", *extra)
    assert r.code == 0, r.err
    return [b["id"] for b in r.json["backups"]]


def test_copy_is_committed_restorable_and_drillable(setup, seaweed, bucket, s3_prefix):
    b = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert b.code == 0, b.err
    assert b.only["copies"] == {"dr": "ok"}
    assert ids(setup, "--target", "dr") == [b.only["id"]]
    body = seaweed.client().get_object(Bucket=bucket, Key=f"{s3_prefix}-dr/{b.only['policy']}/backups/"
                                       f"{b.only['id']}.manifest.json")["Body"].read()  # fmt: skip
    assert b'"target": "dr"' in body and b.only["objects"][0]["sha256"].encode() in body
    assert b'"method": "streamed"' in body  # folder to S3: through drtool, SHA-256 checked on the way
    target = setup.target_db()
    r = setup.restore(target, "--from", "dr", "--json")
    assert r.code == 0, r.err and r.json["row_counts"]["mismatched"] == {}
    d = setup.cli("drill", "-p", str(setup.policy), "--from", "dr", "--json")
    assert d.code == 0, d.out + d.err
    assert d.only["storage_target"] == "dr" and d.only["passed"] is True
    # the policy can make every drill prove the copy
    setup.policy.write_text(setup.policy.read_text() + '\n[drill]\nfrom_copy = "dr"\n')
    d = setup.cli("drill", "-p", str(setup.policy), "--json")
    assert d.code == 0 and d.only["storage_target"] == "dr"


def test_copy_target_down_is_retried_on_the_next_run(setup, seaweed, bucket, s3_prefix):
    good = setup.policy.read_text()
    setup.policy.write_text(good.replace(seaweed.endpoint, f"http://127.0.0.1:{free_port()}"))
    b = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert b.code == 0, b.err  # the primary backup is committed whatever the copy does
    assert b.only["copies"]["dr"].startswith("failed: ") and "will retry on the next run" in b.err
    listed = setup.cli("list", "-p", str(setup.policy), "--json").json["backups"][0]
    assert listed["copies_pending"] == ["dr"]
    setup.policy.write_text(good)  # the target is back
    r = setup.cli("run", str(setup.policy), "--json")
    assert r.code == 0, r.err
    assert r.json["policies"][0]["jobs"]["copies"]["outcome"] == "ok"
    assert ids(setup, "--target", "dr") == [b.only["id"]]
    assert setup.cli("list", "-p", str(setup.policy), "--json").json["backups"][0]["copies_pending"] == []


def test_bucket_in_another_region_fails_closed(setup, seaweed, bucket, s3_prefix):
    setup.policy.write_text(setup.policy.read_text().replace('region = "us-east-1"', 'region = "eu-west-1"'))
    c = setup.cli("check", "-p", str(setup.policy), "--json")
    assert c.code == 3
    copy = [x for x in c.json["policies"][0]["checks"] if x["check"] == "copy:dr"][0]
    assert copy["ok"] is False and "is in region us-east-1, but the policy declares eu-west-1" in copy["detail"]
    b = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert b.code == 0 and "eu-west-1" in b.only["copies"]["dr"]
    assert ids(setup, "--target", "dr") == []


def test_retention_applies_to_each_target(setup):
    made = [setup.cli("backup", "-p", str(setup.policy), "--json").only["id"] for _ in range(2)]
    assert ids(setup, "--target", "dr") == made[::-1]
    r = setup.cli("prune", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    assert r.only["deleted"] == 1 and r.only["copies"]["dr"]["deleted"] == 1
    assert ids(setup) == [made[1]] and ids(setup, "--target", "dr") == [made[1]]


def test_unknown_target_name_is_a_usage_error(setup):
    r = setup.cli("list", "-p", str(setup.policy), "--target", "nowhere")
    assert r.code == 2 and "no storage target named 'nowhere' (known: primary, dr)" in r.err


def test_same_endpoint_copy_is_server_side_and_restorable(pg, tmp_path, seaweed, bucket, s3_prefix):
    """Primary and copy behind one S3 endpoint: the provider copies, the data never passes
    through drtool, and the copy restores like any other."""
    ep = seaweed.endpoint
    primary = f'[storage]\nurl = "s3://{bucket}/{s3_prefix}"\nregion = "us-east-1"\nendpoint_url = "{ep}"\n'
    storage = primary + copy_toml(seaweed, bucket, s3_prefix)
    s = make_setup(pg, tmp_path, storage)
    b = s.cli("backup", "-p", str(s.policy), "--json")
    assert b.code == 0 and b.only["copies"] == {"dr": "ok"}, b.err
    key = f"{s3_prefix}-dr/{b.only['policy']}/backups/{b.only['id']}.manifest.json"
    copy_manifest = seaweed.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert b'"method": "server-side"' in copy_manifest
    v = s.cli("verify", "-p", str(s.policy))
    assert v.code == 0
    r = s.restore(s.target_db(), "--from", "dr", "--json")
    assert r.code == 0, r.err
    assert r.json["row_counts"]["mismatched"] == {}


def test_the_report_shows_pending_copies_of_the_policys_copy_targets_only(setup, seaweed, tmp_path):
    """Copies to a target the policy no longer names will never be made: status and metrics never
    counted them, and the report, which read every policy's copy state for them, no longer lists them."""
    good = setup.policy.read_text()
    setup.policy.write_text(good.replace(seaweed.endpoint, f"http://127.0.0.1:{free_port()}"))
    b = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert b.code == 0 and b.only["copies"]["dr"].startswith("failed: "), b.err
    assert report(setup, tmp_path)["copies_pending"] == {"dr": [b.only["id"]]}
    setup.policy.write_text(re.sub(r"\[\[storage\.copies\]\]\n([a-z_]+ = .*\n)*", "", good))
    assert "[[storage.copies]]" not in setup.policy.read_text()
    assert report(setup, tmp_path)["copies_pending"] == {}


def report(setup, tmp_path) -> dict:
    out = tmp_path / "report.json"
    r = setup.cli("report", "-p", str(setup.policy), "--format", "json", "--output", str(out))
    assert r.code in (0, 3), r.err  # 3: not compliant (no drill yet)
    return json.loads(out.read_text())["policies"][0]
