"""walarchive rules on a folder store (no server): create-only, same content is success, different
content and another cluster's WAL are refused, fetch checks what it writes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from drtool import walarchive, walnames
from drtool.crypto import age
from drtool.errors import IntegrityError
from drtool.policy import load_policy
from drtool.storage import LocalStore

SEG = "000000010000000000000003"


def segment(path: Path, sysid: int, body: bytes = b"") -> Path:
    """A file with a WAL long page header (magic, info, tli, pageaddr, rem_len, pad, sysid, seg size, blcksz)."""
    head = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, 3 * 16 * 1024 * 1024, 0, sysid, 16 * 1024 * 1024, 8192)
    path.write_bytes(head + body + os.urandom(1000))
    return path


@pytest.fixture
def world(tmp_path):
    ident = age.Identity.generate()
    policy_file = tmp_path / "p.toml"
    policy_file.write_text(f"""name = "db1"
[database]
dsn = "postgresql://x@127.0.0.1/db"
[storage]
url = "file://{tmp_path}/store"
[encryption]
recipients = ["{ident.recipient}"]
[objectives]
rpo = "1h"
rto = "1h"
[pitr]
enabled = true
pgdata = "{tmp_path}/pgdata"
spool_dir = "{tmp_path}/spool"
""")
    store = LocalStore(tmp_path / "store")
    store.create_root()
    (tmp_path / "pg_wal").mkdir()
    walarchive.forget_cluster_cache()
    yield store, load_policy(policy_file), ident, tmp_path / "pg_wal"
    walarchive.forget_cluster_cache()


def test_push_is_create_only_and_a_repush_of_the_same_content_is_success(world):
    store, policy, ident, wal = world
    seg = segment(wal / SEG, 7001)
    assert walarchive.push_file(store, policy, seg, SEG) == "stored"
    assert walarchive.push_file(store, policy, seg, SEG) == "present"
    (info,) = walarchive.archived(store, policy, 7001)
    assert info.key == walnames.key_for("db1", 7001, SEG)
    assert walarchive.read_cluster(store, policy).sysid == 7001


def test_different_content_under_an_archived_name_is_refused_and_the_first_kept(world, tmp_path):
    store, policy, ident, wal = world
    walarchive.push_file(store, policy, segment(wal / SEG, 7001, b"first"), SEG)
    first = store.stat(walnames.key_for("db1", 7001, SEG))
    with pytest.raises(walarchive.WalConflict, match=f"{SEG}.zst.age: already archived with different content"):
        walarchive.push_file(store, policy, segment(wal / SEG, 7001, b"second"), SEG)
    assert store.stat(first.key).etag == first.etag
    out = tmp_path / "back"
    assert walarchive.fetch_file(store, policy, [ident], SEG, out) is True
    assert out.read_bytes()[40:45] == b"first"


def test_another_clusters_wal_is_refused_naming_both_system_identifiers(world):
    store, policy, ident, wal = world
    walarchive.push_file(store, policy, segment(wal / SEG, 7001), SEG)
    other = "000000010000000000000004"
    with pytest.raises(walarchive.ForeignWal, match="cluster 7001.*cluster 9999"):
        walarchive.push_file(store, policy, segment(wal / other, 9999), other)
    assert [o.key.rsplit("/", 1)[1] for o in walarchive.archived(store, policy, 7001)] == [SEG + ".zst.age"]
    assert list(walarchive.archived(store, policy, 9999)) == []


def test_fetch_of_a_file_never_archived_answers_false(world, tmp_path):
    store, policy, ident, wal = world
    walarchive.push_file(store, policy, segment(wal / SEG, 7001), SEG)
    assert walarchive.fetch_file(store, policy, [ident], "00000002.history", tmp_path / "h") is False
    assert not (tmp_path / "h").exists()


def test_fetch_refuses_an_object_whose_content_differs_from_its_recorded_digest(world, tmp_path):
    store, policy, ident, wal = world
    seg = segment(wal / SEG, 7001)
    walarchive.push_file(store, policy, seg, SEG)
    key = walnames.key_for("db1", 7001, SEG)
    meta = store.stat(key).metadata
    store.put(key, [age.encrypt_bytes(b"\x28\xb5\x2f\xfd\x20\x01\x09\x00\x00x", [ident.recipient])],
              metadata={**meta, "sha256": "0" * 64})  # fmt: skip
    with pytest.raises(IntegrityError, match=SEG):
        walarchive.fetch_file(store, policy, [ident], SEG, tmp_path / "out")
    assert not (tmp_path / "out").exists()
