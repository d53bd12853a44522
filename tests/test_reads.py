"""Reads survive the faults real stores produce: a connection reset mid-body is resumed with a
Range request from the last good byte, a stalled body times out (storage.read_timeout) and is
retried, a LIST that fails is retried; a fault that lasts, or an object replaced between two
attempts, fails with one line naming the object. Faults come from tests/faultproxy.py in front
of the real S3 server; every byte read is still checked by SHA-256 and age authentication."""

from __future__ import annotations

import pytest
from helpers import EXPECTED_ROWS, SAMPLE_SQL, make_setup

pytestmark = pytest.mark.integration

DUMP = r"\.dump\.zst\.age$"
# random text does not compress: a dump of several 64 KiB pieces, so faults land mid-body
NOISE = "CREATE TABLE noise AS SELECT md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 20000);"


def assert_clean_failure(r, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    for n in needles:
        assert n in r.err, (n, r.err)


@pytest.fixture
def s3(pg, tmp_path, proxied_s3_toml, scratch_root):
    drill = '[drill]\nchecks = ["SELECT count(*) = 3000 FROM orders"]\n'
    setup = make_setup(pg, tmp_path, proxied_s3_toml, sample=SAMPLE_SQL + NOISE, extra_toml=drill)
    setup.env["TMPDIR"] = str(scratch_root)  # drills build their scratch server here
    return setup


def set_storage(setup, **keys: str | int) -> None:
    """Add keys to the policy's [storage] section."""
    lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    setup.policy.write_text(setup.policy.read_text().replace("[storage]\n", "[storage]\n" + lines, 1))


def backed_up(setup) -> dict:
    r = setup.cli("backup", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    r = setup.cli("list", "-p", str(setup.policy), "--json")
    assert r.code == 0, r.err
    return r.json["backups"][0]


def resumed_at(proxy) -> list[int]:
    """Offsets of the ranged GETs of the dump, in order."""
    return [int(rng.removeprefix("bytes=").rstrip("-")) for path, rng in proxy.ranges if "dump.zst.age" in path]


def assert_resumed(proxy, resets: int, size: int) -> None:
    """`resets` broken answers, each followed by a GET of the same version (If-Match) from the
    last byte handed on (a Range from there; none when nothing had been handed on yet)."""
    outcomes = [o for m, p, o in proxy.requests if m == "GET" and "dump.zst.age" in p]
    assert len(outcomes) == resets + 1 and all(o.startswith(("reset", "stall")) for o in outcomes[:resets]), outcomes
    assert outcomes[-1] in ("200", "206"), outcomes
    assert len([p for p, _ in proxy.if_match if "dump.zst.age" in p]) == resets
    offsets = resumed_at(proxy)
    assert len(offsets) == resets and offsets == sorted(offsets) and all(0 < o < size for o in offsets), offsets


def restored_rows(setup, db: str) -> dict[str, int]:
    return {t: int(setup.pg.psql(f'SELECT count(*) FROM "{t.split(".")[0]}"."{t.split(".")[1]}"', db=db).strip())
            for t in EXPECTED_ROWS}  # fmt: skip


def test_restore_resumes_a_download_reset_twice_mid_body(s3, fault_proxy):
    b = backed_up(s3)
    third = b["size_bytes"] // 3
    fault_proxy.add("GET", DUMP, "reset", after=third, times=2)
    target = s3.target_db()
    r = s3.restore(target)
    assert r.code == 0, r.err
    assert restored_rows(s3, target) == EXPECTED_ROWS
    assert_resumed(fault_proxy, 2, b["size_bytes"])
    assert "resuming at byte" in r.err


def test_deep_verify_resumes_across_resets(s3, fault_proxy):
    b = backed_up(s3)
    fault_proxy.add("GET", DUMP, "reset", after=b["size_bytes"] // 2, times=2)
    r = s3.cli("verify", "-p", str(s3.policy), "--json")
    assert r.code == 0, r.err
    checked = r.json["policies"][0]["backups"][0]
    assert checked["ok"] is True and checked["authenticated"] is True
    assert_resumed(fault_proxy, 2, b["size_bytes"])


def test_drill_passes_across_resets(s3, fault_proxy):
    b = backed_up(s3)
    fault_proxy.add("GET", DUMP, "reset", after=b["size_bytes"] // 3, times=2)
    r = s3.cli("drill", "-p", str(s3.policy), "--json")
    assert r.code == 0, (r.out, r.err)
    assert r.only["passed"] is True
    assert_resumed(fault_proxy, 2, b["size_bytes"])


def test_stalled_body_times_out_and_is_resumed(s3, fault_proxy):
    set_storage(s3, read_timeout="2s")
    b = backed_up(s3)
    fault_proxy.add("GET", DUMP, "stall", after=b["size_bytes"] // 2, seconds=8, times=1)
    target = s3.target_db()
    r = s3.restore(target)
    assert r.code == 0, r.err
    assert restored_rows(s3, target) == EXPECTED_ROWS
    assert "sent nothing for 2s" in r.err
    assert_resumed(fault_proxy, 1, b["size_bytes"])


def test_download_reset_on_every_attempt_fails_naming_the_object(s3, fault_proxy):
    set_storage(s3, max_attempts=3)
    b = backed_up(s3)
    fault_proxy.add("GET", DUMP, "reset", after=0)  # every attempt, before a single body byte
    r = s3.restore(s3.target_db())
    assert_clean_failure(r, 1, f"/backups/{b['id']}.dump.zst.age", "gave up after 3 attempts")
    assert r.err.strip().splitlines()[-1].startswith("drtool: error:")
    assert fault_proxy.count("GET", DUMP) == 3


def test_object_replaced_between_attempts_is_not_stitched(s3, fault_proxy, seaweed, bucket, s3_prefix):
    b = backed_up(s3)
    name = s3.db.replace("_", "-")
    key = f"{s3_prefix}/{name}/backups/{b['id']}.dump.zst.age"
    original = seaweed.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def replace() -> None:  # another writer replaces the object while the first answer is cut
        seaweed.client().put_object(Bucket=bucket, Key=key, Body=original[::-1])

    fault_proxy.add("GET", DUMP, "reset", after=len(original) // 2, times=1, then=replace)
    r = s3.restore(s3.target_db())
    assert_clean_failure(r, 1, f"{key}: the object was replaced while it was being read")
    assert len(resumed_at(fault_proxy)) == 1  # it asked for the same version once, and was refused


def test_access_denied_is_not_retried(s3, fault_proxy):
    b = backed_up(s3)
    fault_proxy.add("GET", DUMP, "error", status=403)
    r = s3.restore(s3.target_db())
    assert_clean_failure(r, 1, f"/backups/{b['id']}.dump.zst.age", "access denied")
    # the lean read's 403 is asked once more through boto3, which alone decides an error: not retried
    assert fault_proxy.count("GET", DUMP) == 2


def test_listing_is_retried_after_the_store_keeps_refusing(s3, fault_proxy):
    set_storage(s3, max_attempts=2)
    b = backed_up(s3)
    # two 503s exhaust botocore's own 2 attempts; drtool's read retry then lists again
    fault_proxy.add("GET", r"list-type=2", "error", status=503, times=2)
    r = s3.cli("list", "-p", str(s3.policy), "--json")
    assert r.code == 0, r.err
    assert [x["id"] for x in r.json["backups"]] == [b["id"]]
    assert fault_proxy.count("GET", r"list-type=2", "error 503") == 2


@pytest.mark.parametrize("times", [1, 3])
def test_a_listing_cut_off_halfway_is_listed_again_not_read_as_fewer_backups(s3, fault_proxy, times):
    """drtool reads listings' XML itself (storage/s3.py _page): a body cut short is never taken for a
    shorter listing. Once: botocore retries it; three times (more than its 2 attempts): drtool's
    read retry lists again."""
    set_storage(s3, max_attempts=2)
    b = backed_up(s3)
    fault_proxy.add("GET", r"list-type=2", "reset", after=150, times=times)
    r = s3.cli("list", "-p", str(s3.policy), "--json")
    assert r.code == 0, r.err
    assert [(x["id"], x["status"]) for x in r.json["backups"]] == [(b["id"], "ok")]
    assert fault_proxy.count("GET", r"list-type=2", "reset (store said 200)") == times
