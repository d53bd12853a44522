"""What one backup costs in store requests (issue 15: `run` with a whole fleet due). Every rule of
the commit holds (lock, manifest last, the index's conditional write); what goes is what this
process already knows: its own manifest, an index the GET just said is missing, the LIST it just
made, the index and LIST `run` read before the backup, evidence folders no record was added to,
and a progress estimate nobody sees.
Requests are counted by tests/faultproxy.py in pass-through mode."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from helpers import make_setup, run_cli

DAILY = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 5\n'


def _requests(proxy, method: str, pattern: str) -> list[str]:
    """Paths (LIST prefixes decoded) of the counted requests of `method` whose path holds `pattern`."""
    return [unquote(p) for m, p, _ in proxy.requests if m == method and pattern in unquote(p)]


def _lists(proxy, folder: str) -> list[str]:
    return [p for p in _requests(proxy, "GET", f"/{folder}/") if "list-type=" in p]


@pytest.mark.integration
def test_a_first_scheduled_backup_writes_the_index_without_reading_back_what_it_just_wrote(
    pg, tmp_path, proxied_s3_toml, fault_proxy
):
    setup = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml=DAILY)
    fault_proxy.requests.clear()
    r = setup.cli("run", str(setup.policy), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    assert _requests(fault_proxy, "GET", ".manifest.json") == []  # its own manifest is not read back
    assert _requests(fault_proxy, "HEAD", "/index.json") == []  # the GET's 404 already said it is missing
    # one LIST for the slot's check, whose read the index write merges into (no second LIST or GET)
    assert len(_lists(fault_proxy, "backups")) == 1
    assert len(_requests(fault_proxy, "GET", "/index.json")) == 1
    assert len(_lists(fault_proxy, "drills")) == 1 and len(_lists(fault_proxy, "checks")) == 1
    listed = setup.cli("list", "-p", str(setup.policy), "--json")
    assert listed.code == 0 and "catalog index" not in listed.err  # the index written is usable
    assert [b["status"] for b in listed.json["backups"]] == ["ok"]


@pytest.mark.integration
def test_a_backup_into_an_indexed_store_lists_no_evidence_folder_and_reads_no_manifest(
    pg, tmp_path, proxied_s3_toml, fault_proxy
):
    setup = make_setup(pg, tmp_path, proxied_s3_toml)
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    fault_proxy.requests.clear()
    r = setup.cli("backup", "-p", str(setup.policy))
    assert r.code == 0, r.err
    assert _lists(fault_proxy, "drills") == [] and _lists(fault_proxy, "checks") == []
    assert _requests(fault_proxy, "GET", ".manifest.json") == []  # no progress estimate without a terminal
    assert len(_lists(fault_proxy, "backups")) == 1
    listed = setup.cli("list", "-p", str(setup.policy), "--json")
    assert listed.code == 0 and "catalog index" not in listed.err
    assert [b["status"] for b in listed.json["backups"]] == ["ok", "ok"]


@pytest.mark.integration
def test_a_drill_record_added_behind_the_index_keeps_it_stale_across_a_later_commit(
    pg, tmp_path, proxied_s3_toml, fault_proxy, seaweed, bucket, s3_prefix
):
    setup = make_setup(pg, tmp_path, proxied_s3_toml)
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    name = setup.db.replace("_", "-")
    seaweed.client().put_object(Bucket=bucket, Key=f"{s3_prefix}/{name}/drills/behind-its-back.json", Body=b"{}")
    assert setup.cli("backup", "-p", str(setup.policy)).code == 0
    r = setup.cli("prune", "-p", str(setup.policy), "--dry-run")
    assert r.code == 0, r.err
    # the commit did not stamp the changed folder as summarised: readers still see it changed
    assert "catalog index is stale" in r.err and f"{name}/drills/" in r.err


def test_a_signed_fleet_keeps_a_usable_index_across_backups(pg, tmp_path):
    """With [signing] the index names who signed each backup: a commit knows it signed its own
    manifest (with a key this host trusts), so the index stays usable without reading it back."""
    r = run_cli("keygen", "--signing", "--output", str(tmp_path / "signing.key"))
    assert r.code == 0, r.err
    line = r.out.strip().splitlines()[-1]
    signing = f'\n[signing]\nkey_file = "{tmp_path / "signing.key"}"\ntrusted_keys = ["{line}"]\n'
    setup = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=signing)
    for n in (1, 2):
        assert setup.cli("backup", "-p", str(setup.policy)).code == 0
        listed = setup.cli("list", "-p", str(setup.policy), "--json")
        assert listed.code == 0 and "catalog index" not in listed.err, listed.err
        assert [b["status"] for b in listed.json["backups"]] == ["ok"] * n


def test_a_signed_scheduled_backup_merged_into_runs_read_leaves_a_usable_index(pg, tmp_path):
    """The commit of a backup `run` takes merges into the index run read under the lock: with
    [signing], the entry names this host's key and the signature's version, so readers trust it."""
    r = run_cli("keygen", "--signing", "--output", str(tmp_path / "signing.key"))
    assert r.code == 0, r.err
    line = r.out.strip().splitlines()[-1]
    signing = f'\n[signing]\nkey_file = "{tmp_path / "signing.key"}"\ntrusted_keys = ["{line}"]\n'
    setup = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY + signing)
    ran = setup.cli("run", str(setup.policy), "--json")
    assert ran.code == 0, ran.err
    assert ran.json["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    listed = setup.cli("list", "-p", str(setup.policy), "--json")
    assert listed.code == 0 and "catalog index" not in listed.err, listed.err
    assert [b["status"] for b in listed.json["backups"]] == ["ok"]


@pytest.mark.integration
@pytest.mark.parametrize("lost", [r"\.manifest\.json$", r"/index\.json$"])
def test_a_scheduled_backup_whose_commit_or_index_reply_is_lost_is_listed_once_from_a_fresh_index(
    pg, tmp_path, proxied_s3_toml, fault_proxy, lost
):
    """The store acted but its reply was lost. For the manifest, commit finds it stored and returns
    nothing, so the index write reads again instead of merging into run's earlier read. For the
    index, the retried conditional write fails on its own landed version and merges again. Either
    way the backup is listed, once, from an index readers can use."""
    setup = make_setup(pg, tmp_path, proxied_s3_toml, extra_toml=DAILY)
    fault_proxy.add("PUT", lost, "lose_reply", times=1)
    r = setup.cli("run", str(setup.policy), "--json")
    assert r.code == 0, r.err
    assert r.json["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    assert "Traceback" not in r.err
    assert fault_proxy.count("PUT", lost, "lose_reply (store said 200)") == 1, fault_proxy.requests
    listed = setup.cli("list", "-p", str(setup.policy), "--json")
    assert listed.code == 0 and "catalog index" not in listed.err, listed.err
    assert [b["status"] for b in listed.json["backups"]] == ["ok"]
