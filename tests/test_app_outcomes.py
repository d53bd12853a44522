"""Use cases that look at several parts (init, verify) return their whole result and the error
apart (drtool.app.outcome.Outcome): nothing rides back to the CLI on an exception attribute."""

from __future__ import annotations

from pathlib import Path

from drtool.app import App, Outcome
from drtool.crypto import age
from drtool.errors import IntegrityError, StorageError
from drtool.policy import load_policy
from drtool.storage import LocalStore


def write_policy(tmp_path: Path, storage_toml: str) -> Path:
    ident = age.Identity.generate()
    path = tmp_path / "policy.toml"
    path.write_text(f"""
name = "outcomes"
[database]
dsn = "host=127.0.0.1 dbname=nothing"
{storage_toml}
[encryption]
recipients = ["{ident.recipient}"]
""")
    return path


def test_init_that_fails_on_one_target_returns_every_target_and_the_error(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    storage = (f'[storage]\nurl = "file://{tmp_path}/primary"\n'
               f'[[storage.copies]]\nname = "dr"\nurl = "file://{tmp_path}/a-file/copy"\n')  # fmt: skip
    policy = load_policy(write_policy(tmp_path, storage))
    outcome = App().init(policy)
    assert isinstance(outcome, Outcome) and not outcome.ok
    assert isinstance(outcome.error, StorageError) and "a-file/copy" in str(outcome.error)
    assert [(t["target"], t["ok"]) for t in outcome.result["targets"]] == [("primary", True), ("dr", False)]
    assert outcome.result["ok"] is False
    assert not hasattr(outcome.error, "result")


def test_init_that_works_returns_no_error(tmp_path):
    policy = load_policy(write_policy(tmp_path, f'[storage]\nurl = "file://{tmp_path}/primary"\n'))
    outcome = App().init(policy)
    assert outcome.ok and outcome.error is None and outcome.result["ok"] is True


def test_verify_of_an_unreadable_manifest_returns_the_report_and_an_integrity_error(tmp_path):
    policy = load_policy(write_policy(tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"\n'))
    store = LocalStore(tmp_path / "store")
    store.create_root()
    store.put("outcomes/backups/20240101T000000Z/manifest.json", [b"{not json"])
    outcome = App().verify(policy, all_backups=True)
    assert isinstance(outcome.error, IntegrityError)
    assert outcome.result["damaged"] == 1
    assert [b["id"] for b in outcome.result["backups"]] == ["20240101T000000Z"]
    assert not hasattr(outcome.error, "result")
