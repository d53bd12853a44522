"""The --json contract, locked by golden files (tests/golden/<command>.json), as pipx's
test_result_contract does: one shape per command whether one policy or a folder is given.

Volatile values (ids, times, sizes, hashes, paths, random names) are normalised before the
comparison. Regenerate after a deliberate change with DRTOOL_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import drill_setup

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DRTOOL_UPDATE_GOLDEN") == "1"

_VALUE_PATTERNS = [
    (re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$"), "<backup-id>"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"), "<time>"),
    (re.compile(r"^[0-9a-f]{64}$"), "<sha256>"),
    (re.compile(r"^age1[0-9a-z]+$"), "<recipient>"),
    (re.compile(r"^SHA256:\S+$"), "<fingerprint>"),
    (re.compile(r"^ssh-ed25519 \S+"), "<public-key>"),
]
# whole numbers that change from run to run; counts stay as they are
_VOLATILE_NUMBER = re.compile(r"(bytes|size|seconds|_ms$|duration|rate|ratio|elapsed|pid|port|version_num)")


class Normaliser:
    def __init__(self, tmp_path: Path, names: dict[str, str]):
        self.tmp = str(tmp_path)
        self.names = names  # random names (database, policy) -> stable placeholders

    def text(self, s: str) -> str:
        for pattern, placeholder in _VALUE_PATTERNS:
            if pattern.match(s):
                return placeholder
        s = s.replace(self.tmp, "<tmp>")
        for real, placeholder in self.names.items():
            s = s.replace(real, placeholder)
        s = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{6}", "<backup-id>", s)
        s = re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "<time>", s)
        s = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", s)
        s = re.sub(r"\brestore_[0-9a-f]{8}\b", "<target-db>", s)
        s = re.sub(r"PostgreSQL \d+(\.\d+)?( \([^)]*\))?", "PostgreSQL <version>", s)
        s = re.sub(r"\b\d+ bytes\b", "<n> bytes", s)
        s = re.sub(r"\b\d+(\.\d)? [kMGT]?B\b", "<size>", s)
        s = re.sub(r"\S*/(pg_\w+) \d+(\.\d+)?", r"<bin>/\1 <version>", s)
        s = re.sub(r"/\S*drtool-drill-\w+", "<scratch>", s)
        s = re.sub(r"^sha256:[0-9a-f]{16}$", "<fingerprint>", s)
        return re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", s)

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {self.text(k): self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, float):  # measured (seconds, ratios): never the same twice
            return "<float>"
        if isinstance(value, int):
            return "<int>" if _VOLATILE_NUMBER.search(key) else value
        if key.endswith("version") or key in ("host", "hostname"):
            return f"<{key}>"
        return self.text(str(value))


def assert_golden(name: str, doc: dict[str, Any], normalise: Normaliser) -> None:
    got = json.dumps(normalise(doc), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} does not exist; make it with DRTOOL_UPDATE_GOLDEN=1 and review it")
        path.write_text(got)
    assert got == path.read_text(), f"--json of `{name}` differs from {path} (DRTOOL_UPDATE_GOLDEN=1 to accept)"


@pytest.fixture
def fleet(pg, tmp_path, scratch_root):
    """One policy with a backup store, a drill check, a schedule; and a folder holding it twice
    (a second valid policy and an invalid file) for the folder form."""
    s = drill_setup(pg, tmp_path, scratch_root, '[drill]\nchecks = ["SELECT count(*) = 3000 FROM orders"]\n'
                    '[schedule]\nbackup = "0 */6 * * *"\nprune = "45 4 * * *"\n')  # fmt: skip
    name = s.policy.read_text().split('name = "')[1].split('"')[0]
    folder = tmp_path / "fleet"
    folder.mkdir()
    shutil.copy(s.policy, folder / "a.toml")
    (folder / "b.toml").write_text(s.policy.read_text().replace(f'name = "{name}"', f'name = "{name}-b"'))
    (folder / "zz-broken.toml").write_text('name = "broken"\n[database]\nbogus = 1\n')
    normalise = Normaliser(tmp_path, {f"{name}-b": "<policy-b>", name: "<policy>", s.db: "<db>"})
    return s, folder, normalise


def cli_json(s, *args: str, codes=(0,)) -> dict[str, Any]:
    r = s.cli(*args, "--json")
    assert r.code in codes, (args, r.code, r.err)
    assert "Traceback" not in r.err
    return r.json


def test_json_of_every_command_matches_its_golden_file(fleet, tmp_path):
    s, folder, normalise = fleet
    p = str(s.policy)
    assert_golden("init", cli_json(s, "init", "-p", p), normalise)
    assert_golden("keygen", cli_json(s, "keygen", "-o", str(tmp_path / "k.txt")), normalise)
    assert_golden("keygen-signing", cli_json(s, "keygen", "--signing", "-o", str(tmp_path / "s.key")), normalise)
    assert_golden("check", cli_json(s, "check", "-p", p), normalise)
    assert_golden("backup", cli_json(s, "backup", "-p", p), normalise)
    assert_golden("list", cli_json(s, "list", "-p", p), normalise)
    assert_golden("verify", cli_json(s, "verify", "-p", p), normalise)
    assert_golden("drill", cli_json(s, "drill", "-p", p), normalise)
    target = s.target_db()
    assert_golden("restore", cli_json(s, "restore", "-p", p, "--target", s.pg.dsn(target),
                                      "--target-password-env", "TEST_PGPASSWORD"), normalise)  # fmt: skip
    assert_golden("prune", cli_json(s, "prune", "-p", p, "--dry-run"), normalise)
    assert_golden("run-dry-run", cli_json(s, "run", "-p", p, "--dry-run"), normalise)
    assert_golden("status", cli_json(s, "status", "-p", p), normalise)


def test_a_folder_gives_the_same_shape_as_one_policy(fleet):
    """backup, prune, drill: the same document for a folder as for one file, plus invalid_policies."""
    s, folder, normalise = fleet
    single = {cmd: cli_json(s, cmd, "-p", str(s.policy), *extra) for cmd, extra in
              (("backup", ()), ("prune", ("--dry-run",)), ("drill", ()))}  # fmt: skip
    for cmd, extra in (("backup", ()), ("prune", ("--dry-run",)), ("drill", ())):
        many = cli_json(s, cmd, "-p", str(folder), *extra, codes=(2,))  # the invalid file makes it exit 2
        assert set(many) == set(single[cmd]) | {"invalid_policies"}, cmd
        (list_key,) = [k for k in single[cmd] if isinstance(single[cmd][k], list)]
        assert len(single[cmd][list_key]) == 1 and len(many[list_key]) == 2, cmd
        assert set(many[list_key][0]) == set(single[cmd][list_key][0]), cmd
        assert [b["file"].rsplit("/", 1)[1] for b in many["invalid_policies"]] == ["zz-broken.toml"]


def test_golden_normaliser_keeps_what_must_not_change(tmp_path):
    """The normaliser must not hide a renamed key or a changed flag, or the golden files prove nothing."""
    n = Normaliser(tmp_path, {"src-1": "<policy>"})
    doc = {"id": "20261126T192000Z-3f9a1c", "ok": True, "kept": 3, "size_bytes": 12, "policy": "src-1",
           "path": f"{tmp_path}/store"}  # fmt: skip
    assert n(doc) == {"id": "<backup-id>", "ok": True, "kept": 3, "size_bytes": "<int>", "policy": "<policy>",
                      "path": "<tmp>/store"}  # fmt: skip
    assert n({"ok": False}) != n({"ok": True}) and n({"a": 1}) != n({"b": 1})
