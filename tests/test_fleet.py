"""A folder of policies is a fleet: each file stands alone. An invalid file is named with its
reason (stderr, text and JSON output, metrics) and never stops the others; the exit code is the
worst of all (at least 2 when a file is invalid)."""

from __future__ import annotations

import pytest
from helpers import make_setup, run_cli

pytestmark = pytest.mark.integration

DAILY = '[schedule]\nbackup = "0 0 * * *"\n[retention]\nkeep_last = 5\n'


@pytest.fixture
def fleet(pg, tmp_path):
    """fleet/a-good.toml (a valid policy with a folder store) and fleet/b-bad.toml (invalid)."""
    (tmp_path / "store").mkdir()
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=DAILY)
    folder = tmp_path / "fleet"
    folder.mkdir()
    good = folder / "a-good.toml"
    good.write_text(s.policy.read_text())
    bad = folder / "b-bad.toml"
    bad.write_text(s.policy.read_text().replace('name = "', 'name = "other-').replace("keep_last", "keep_lasst"))
    return s, folder, good, bad


def test_an_invalid_policy_file_does_not_stop_run_for_the_others(fleet, tmp_path):
    s, folder, good, bad = fleet
    metrics = tmp_path / "drtool.prom"
    r = s.cli("run", str(folder), "--json", "--metrics-file", str(metrics))
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    doc = r.json
    assert [p["policy"] for p in doc["policies"]] == [s.db.replace("_", "-")]
    assert doc["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    [invalid] = doc["invalid_policies"]
    assert invalid["file"] == str(bad) and invalid["name"] == "other-" + s.db.replace("_", "-")
    assert any("retention.keep_lasst: unknown key" in p for p in invalid["problems"])
    assert f"drtool: error: {bad}: retention.keep_lasst: unknown key" in r.err
    text = metrics.read_text()
    assert f'drtool_policy_valid{{file="{bad}"}} 0.0' in text
    assert f'drtool_policy_valid{{file="{good}"}} 1.0' in text
    assert len(s.cli("list", "-p", str(good), "--json").json["backups"]) == 1


def test_run_text_output_names_the_invalid_file(fleet):
    s, folder, good, bad = fleet
    r = s.cli("run", str(folder))
    assert r.code == 2
    assert f"INVALID (not run) {bad}: retention.keep_lasst: unknown key" in r.out
    assert s.db.replace("_", "-") in r.out and " backup  ok " in r.out


@pytest.mark.parametrize("command", ["list", "prune", "verify", "status", "backup"])
def test_every_fleet_command_proceeds_past_an_invalid_file(fleet, command):
    s, folder, good, bad = fleet
    if command in ("list", "prune", "verify"):
        assert s.cli("backup", "-p", str(good)).code == 0
    r = s.cli(command, "-p", str(folder), "--json")
    assert "Traceback" not in r.err
    assert [b["file"] for b in r.json["invalid_policies"]] == [str(bad)]
    assert f"{bad}: retention.keep_lasst" in r.err
    name = s.db.replace("_", "-")
    if command == "status":
        assert r.code == 3 and r.json["status"] == "unhealthy" and name in r.json["policies"]
    else:
        assert r.code == 2, r.err
    if command == "list":
        assert [b["policy"] for b in r.json["backups"]] == [name]
    if command == "prune":
        assert [p["policy"] for p in r.json["policies"]] == [name]
    if command == "verify":
        assert r.json["ok"] is False and r.json["policies"][0]["backups"][0]["ok"] is True
    if command == "backup":
        assert len(r.json["backups"]) == 1


def test_check_lists_the_invalid_file_and_checks_the_rest(fleet):
    s, folder, good, bad = fleet
    r = s.cli("check", "-p", str(folder))
    assert r.code == 2, r.err
    assert f"INVALID (not run) {bad}: retention.keep_lasst" in r.out
    assert "database  ok" in r.out


def test_name_picks_a_valid_policy_past_an_invalid_file(fleet):
    s, folder, good, bad = fleet
    r = s.cli("list", "-p", str(folder), "--name", s.db.replace("_", "-"), "--json")
    assert r.code == 0, r.err
    # with --name, a file declaring another name is not validated at all (issue 15: a fleet of a
    # thousand files costs one TOML parse each), so nothing is said about it
    assert "invalid_policies" not in r.json and str(bad) not in r.err


def test_name_of_an_invalid_policy_names_its_problems(fleet):
    s, folder, good, bad = fleet
    other = "other-" + s.db.replace("_", "-")
    r = s.cli("list", "-p", str(folder), "--name", other)
    assert r.code == 2 and f"{bad}: retention.keep_lasst: unknown key" in r.err


def test_a_duplicate_name_refuses_the_later_file_and_runs_the_first(fleet):
    s, folder, good, bad = fleet
    bad.write_text(good.read_text())
    r = s.cli("run", str(folder), "--json")
    assert r.code == 2
    assert r.json["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    [invalid] = r.json["invalid_policies"]
    assert invalid["file"] == str(bad) and "is also used by" in invalid["problems"][0]


def test_report_of_a_fleet_with_an_invalid_file_is_not_compliant(fleet, tmp_path):
    s, folder, good, bad = fleet
    out = tmp_path / "report.json"
    r = s.cli("report", "-p", str(folder), "--format", "json", "--output", str(out))
    assert r.code == 2, r.err
    import json

    doc = json.loads(out.read_text())
    assert doc["compliant"] is False and doc["invalid_policies"][0]["file"] == str(bad)


def test_run_of_several_paths_isolates_an_invalid_file(fleet):
    s, folder, good, bad = fleet
    r = s.cli("run", str(bad), str(good), "--json")
    assert r.code == 2
    assert r.json["policies"][0]["jobs"]["backup"]["outcome"] == "ok"
    assert r.json["invalid_policies"][0]["file"] == str(bad)


def test_a_single_invalid_file_still_exits_2_listing_every_problem(fleet):
    s, folder, good, bad = fleet
    bad.write_text(bad.read_text().replace('rto = "30m"', 'rto = "soon"'))
    r = run_cli("run", str(bad), "--json", env=s.env)
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith(f"drtool: error: {bad}: ") for ln in lines)


def test_restore_from_a_folder_with_an_invalid_file_needs_a_name(fleet):
    s, folder, good, bad = fleet
    r = s.cli("restore", "-p", str(folder), "--target", s.pg.dsn("postgres"))
    assert r.code == 2 and "pick one with --name" in r.err and "invalid b-bad.toml" in r.err
