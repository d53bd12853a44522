"""The catalog index (<policy>/index.json): read by list/status/report/prune/run instead of every
manifest, kept by every writer, and never believed over the manifests: missing, stale, corrupt or
concurrently written, the commands stay correct and say so."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from helpers import make_setup

from drtool import catalog, catalog_index
from drtool.storage import LocalStore

pytestmark = pytest.mark.integration


def clean(r, code: int = 0) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err + r.out


def local(pg, tmp_path, extra: str = ""):
    return make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=extra)


def backup(s) -> str:
    r = s.cli("backup", "-p", str(s.policy), "--json")
    clean(r)
    return r.only["id"]


def index_file(s) -> Path:
    return Path(s.store_url.removeprefix("file://")) / s.policy_name / "index.json"


def listed(s) -> tuple[list[str], str]:
    r = s.cli("list", "-p", str(s.policy), "--json")
    clean(r)
    return [b["id"] for b in r.json["backups"] if b["status"] == "ok"], r.err


@pytest.fixture
def two(pg, tmp_path):
    s = local(pg, tmp_path)
    s.policy_name = s.db.replace("_", "-")
    s.ids = [backup(s), backup(s)]
    return s


def test_every_commit_keeps_the_index_and_list_reads_it_without_a_warning(two):
    doc = json.loads(index_file(two).read_text())
    assert sorted(doc["backups"]) == sorted(two.ids)
    assert all(e["kind"] == "logical" for e in doc["backups"].values())
    ids, err = listed(two)
    assert ids == two.ids[::-1]  # newest first: by recovery point (two ids may share their second)
    assert "catalog index" not in err


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_missing_or_corrupt_index_falls_back_to_the_manifests_saying_so_once_and_the_next_commit_mends_it(two, fault):
    if fault == "missing":
        index_file(two).unlink()
    else:
        index_file(two).write_text('{"format": "drtool-catalog-index", "version": 1, "backups": [')
    ids, err = listed(two)
    assert ids == two.ids[::-1]  # newest first: by recovery point (two ids may share their second)
    assert err.count("catalog index") == 1, err
    assert str(index_file(two).relative_to(index_file(two).parents[1])) in err  # names the object
    third = backup(two)
    assert sorted(json.loads(index_file(two).read_text())["backups"]) == sorted([*two.ids, third])
    ids, err = listed(two)
    assert len(ids) == 3 and "catalog index" not in err


def test_a_backup_committed_by_an_older_drtool_makes_the_index_stale_and_is_still_listed(two):
    before = index_file(two).read_bytes()
    third = backup(two)
    index_file(two).write_bytes(before)  # as if an older drtool had committed `third` without the index
    ids, err = listed(two)
    assert ids[0] == third and len(ids) == 3
    assert "stale" in err and third in err
    st = two.cli("status", "-p", str(two.policy), "--json")
    assert st.json["policies"][two.policy_name]["backups"] == 3
    clean(two.cli("catalog", "rebuild", "-p", str(two.policy)))
    ids, err = listed(two)
    assert len(ids) == 3 and "catalog index" not in err


def test_a_backup_deleted_behind_the_index_is_never_listed_as_restorable(two):
    gone = two.ids[-1]
    (index_file(two).parent / "backups" / f"{gone}.manifest.json").unlink()
    ids, _ = listed(two)
    assert gone not in ids and ids == [two.ids[0]]
    st = two.cli("status", "-p", str(two.policy), "--json")
    assert st.json["policies"][two.policy_name]["backups"] == 1


def test_verify_all_names_an_index_entry_that_differs_from_its_manifest(two):
    doc = json.loads(index_file(two).read_text())
    doc["backups"][two.ids[0]]["manifest"]["sizes"]["stored_bytes"] += 1
    index_file(two).write_text(json.dumps(doc))
    r = two.cli("verify", "-p", str(two.policy), "--all")
    clean(r, 3)
    assert two.ids[0] in r.err and "differs from its manifest (sizes)" in r.err and "index.json" in r.err


def test_prune_never_deletes_on_the_index_word(pg, tmp_path):
    s = local(pg, tmp_path, "[retention]\nkeep_last = 1\n")
    s.policy_name = s.db.replace("_", "-")
    older, newer = backup(s), backup(s)
    doc = json.loads(index_file(s).read_text())
    doc["backups"][newer]["manifest"]["recovery_point"] = "2001-01-01T00:00:00Z"  # the index lies
    index_file(s).write_text(json.dumps(doc))
    r = s.cli("prune", "-p", str(s.policy), "--json")
    clean(r)
    rows = {b["id"]: b["action"] for b in r.only["backups"]}
    assert rows == {newer: "keep", older: "delete"}  # decided from the manifests
    assert (index_file(s).parent / "backups" / f"{newer}.manifest.json").exists()
    assert sorted(json.loads(index_file(s).read_text())["backups"]) == [newer]  # and the index mended


class _Barrier:
    """A store whose index reads wait for each other: both writers read the same version."""

    def __init__(self, store, parties: int):
        self.store, self.barrier = store, threading.Barrier(parties, timeout=30)
        self.waited = threading.local()

    def __getattr__(self, name):
        return getattr(self.store, name)

    def get(self, key, *a, **kw):
        if key.endswith("index.json") and not getattr(self.waited, "done", False):
            self.waited.done = True
            self.barrier.wait()
        return self.store.get(key, *a, **kw)


def test_two_concurrent_writers_both_keep_their_entry(two):
    root = index_file(two).parents[1]
    store = LocalStore(root, url=two.store_url)
    base = catalog.read_manifest(store, two.policy_name, two.ids[0]).record
    fresh = []
    for n in range(2):  # two more committed backups (copies of the first under new ids)
        bid = base.id[:-6] + f"{n:06x}"
        m = base.__class__(**{**base.__dict__, "id": bid})
        src = root / two.policy_name / "backups" / f"{base.id}.{catalog.DUMP_NAME}"
        store.put(catalog.dump_key(two.policy_name, bid), [src.read_bytes()])
        catalog.write_manifest(store, m)
        fresh.append(m)
    wrapped = _Barrier(store, 2)
    errors = []

    def write(m):
        try:
            catalog_index.update(wrapped, two.policy_name, verifier=None, signer=None, written=[m])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(m,)) for m in fresh]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    doc = json.loads(index_file(two).read_text())
    assert sorted(doc["backups"]) == sorted([*two.ids, *(m.id for m in fresh)])


def _commit_copy(store, root: Path, policy: str, base, n: int):
    """A backup committed as a copy of `base` under a new id: (its manifest, what was written)."""
    bid = base.id[:-6] + f"{n:06x}"
    m = base.__class__(**{**base.__dict__, "id": bid})
    src = root / policy / "backups" / f"{base.id}.{catalog.DUMP_NAME}"
    dump = store.put(catalog.dump_key(policy, bid), [src.read_bytes()])
    return m, [dump, *catalog.write_manifest(store, m)]


class _Counting:
    """A store that counts LISTs and index reads (the requests a merge into an earlier read saves)."""

    def __init__(self, store):
        self.store, self.lists, self.index_reads = store, 0, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def list_objects(self, prefix, *a, **kw):
        self.lists += prefix.endswith("/backups/")
        return self.store.list_objects(prefix, *a, **kw)

    def get(self, key, *a, **kw):
        self.index_reads += key.endswith("index.json")
        return self.store.get(key, *a, **kw)


def test_a_commit_merges_into_the_index_read_before_it_without_reading_it_again(two):
    """run reads the index to find a backup taken by hand in the slot; its commit merges into that
    read: no second LIST of the backups, no second GET of the index, and the index is fresh."""
    root = index_file(two).parents[1]
    store = _Counting(LocalStore(root, url=two.store_url))
    seen = catalog_index.read(store, two.policy_name)
    base = catalog.read_manifest(store, two.policy_name, two.ids[0]).record
    m, wrote = _commit_copy(store, root, two.policy_name, base, 1)
    store.lists = store.index_reads = 0
    catalog_index.update(store, two.policy_name, verifier=None, signer=None, written=[m], seen=seen, added=wrote)
    assert (store.lists, store.index_reads) == (0, 0)
    fresh = catalog_index.read(store, two.policy_name)  # raises IndexUnusable when stale
    assert sorted(b.id for b in fresh.listing.backups) == sorted([*two.ids, m.id])
    ids, err = listed(two)
    assert len(ids) == 3 and "catalog index" not in err


def test_a_commit_merged_into_an_earlier_read_keeps_the_entry_another_writer_added_meanwhile(two):
    root = index_file(two).parents[1]
    store = _Counting(LocalStore(root, url=two.store_url))
    seen = catalog_index.read(store, two.policy_name)
    base = catalog.read_manifest(store, two.policy_name, two.ids[0]).record
    other, _ = _commit_copy(store, root, two.policy_name, base, 1)  # another writer commits meanwhile
    catalog_index.update(store, two.policy_name, verifier=None, signer=None, written=[other])
    mine, wrote = _commit_copy(store, root, two.policy_name, base, 2)
    store.lists = 0
    catalog_index.update(store, two.policy_name, verifier=None, signer=None, written=[mine], seen=seen, added=wrote)
    assert store.lists == 1  # the conditional write lost: the index and the backups were read again
    doc = json.loads(index_file(two).read_text())
    assert sorted(doc["backups"]) == sorted([*two.ids, other.id, mine.id])
    ids, err = listed(two)
    assert len(ids) == 4 and "catalog index" not in err


def test_a_first_commit_without_an_index_still_reads_the_drill_records_there_are(pg, tmp_path):
    """No index and no backup: read() gives an empty one, which a commit may complete only while
    the policy has no drill or check record either; otherwise the index is made from the records."""
    s = local(pg, tmp_path)
    s.policy_name = s.db.replace("_", "-")
    root = Path(s.store_url.removeprefix("file://"))
    store = LocalStore(root, url=s.store_url)
    store.put(f"{s.policy_name}/drills/20200101T000000Z-aaaaaa.json", [b"not a drill record"])
    seen = catalog_index.read(store, s.policy_name)
    assert seen.etag is None and not seen.index.backups
    first = backup(s)  # a real backup to copy from; its own commit made the index: remove it again
    (root / s.policy_name / "index.json").unlink()
    base = catalog.read_manifest(store, s.policy_name, first).record
    m, wrote = _commit_copy(store, root, s.policy_name, base, 1)
    index = catalog_index.update(store, s.policy_name, verifier=None, signer=None, written=[m], seen=seen,
                                 added=wrote)  # fmt: skip
    assert index.drills["problems"], index.drills  # the unreadable record was read (a rebuild), not skipped
    assert sorted(index.backups) == sorted([first, m.id])  # and the backup the read did not list is in it


def _stable(doc):
    """Drop what changes between two runs of the same command (times of the run, ages)."""
    if isinstance(doc, dict):
        return {k: _stable(v) for k, v in doc.items()
                if k not in ("generated_at", "checked_at", "last_backup_age_seconds", "age_seconds", "to", "series",
                             "worst_seconds", "worst_to", "uncovered")}  # fmt: skip
    if isinstance(doc, list):
        return [_stable(x) for x in doc]
    return doc


def test_list_status_report_and_prune_answer_the_same_with_and_without_the_index(two, tmp_path):
    damaged = two.ids[0]
    (index_file(two).parent / "backups" / f"{damaged}.{catalog.DUMP_NAME}").write_bytes(b"not the dump")
    clean(two.cli("verify", "-p", str(two.policy), "--backup", damaged), 3)  # a check record: damaged
    p = str(two.policy)

    def answers():
        out = []
        report = ("report", "--format", "json", "-o", "-", "--from", "2000-01-01", "--to", "2100-01-01")
        for args in (("list", "--json"), ("status", "--json"), report, ("prune", "--dry-run", "--json")):
            r = two.cli(*args, "-p", p)
            assert "Traceback" not in r.err, r.err[-1500:]
            out.append((r.code, _stable(json.loads(r.out))))
        return out

    with_index = answers()
    index_file(two).unlink()
    without = answers()
    assert with_index == without
    listed_rows = with_index[0][1]["backups"]
    assert {b["id"]: b["status"] for b in listed_rows}[damaged] == "damaged"


def test_list_json_is_streamed_as_the_one_document_it_always_was(two):
    r = two.cli("list", "-p", str(two.policy), "--json")
    clean(r)
    doc = json.loads(r.out)
    assert list(doc) == ["schema_version", "backups", "windows"] and len(doc["backups"]) == 2  # windows: PITR
    assert r.out == json.dumps(doc, indent=2) + "\n"  # byte for byte what emit_json writes


def test_the_index_gives_the_manifests_records_without_reencoding_each_entry(two, monkeypatch):
    """Reading the index cost 0.4-0.7 ms of CPU per backup entry, most of it a JSON round trip per
    entry and a listing-size map remade per entry (issue 15): the records are made from the decoded
    entries, and are those the manifests give (but for the table list the index leaves out)."""
    import dataclasses

    from drtool import catalog_index
    from drtool.policy import load_policy
    from drtool.storage import LocalStore

    store = LocalStore(Path(two.store_url.removeprefix("file://")))
    encoded = []
    real = json.dumps
    monkeypatch.setattr(json, "dumps", lambda *a, **kw: encoded.append(a) or real(*a, **kw))
    indexed = catalog_index.read(store, load_policy(two.policy).name)
    assert encoded == []
    scanned = catalog.scan(store, two.policy_name)
    assert [dataclasses.replace(b.record, tables={}) for b in indexed.listing.backups] == [
        dataclasses.replace(b.record, tables={}) for b in scanned.backups
    ]
    assert [b.table_count for b in indexed.listing.backups] == [len(b.record.tables) for b in scanned.backups]


def test_a_backup_read_from_the_index_gives_the_manifest_document_its_record_gives(two):
    """An index-read backup hands out its entry's document as `manifest` (report and metrics read it)
    instead of converting the record back: it must be what manifest_to_dict of the record makes,
    the document a manifest-read backup gives (but for the table list the index leaves out)."""
    from drtool import catalog_index
    from drtool.records import manifest_to_dict
    from drtool.storage import LocalStore

    store = LocalStore(Path(two.store_url.removeprefix("file://")))
    indexed = catalog_index.read(store, two.policy_name).listing.backups
    scanned = catalog.scan(store, two.policy_name).backups
    assert [b.doc is not None for b in indexed] == [True, True]
    assert [b.manifest for b in indexed] == [manifest_to_dict(b.record) for b in indexed]
    assert [b.manifest for b in indexed] == [{**b.manifest, "tables": {}} for b in scanned]


def _store_of(s) -> LocalStore:
    return LocalStore(Path(s.store_url.removeprefix("file://")))


def test_a_deferred_read_parses_the_newest_manifest_now_and_the_others_when_used(two, monkeypatch):
    """status uses one manifest of each policy but parsed every index entry's, a fifth of a fleet
    status's CPU at 100 backups a policy (issue 15). A deferred read parses the newest restorable
    backup's, checks the id, recovery point and objects of every entry, and parses the rest when
    they are used: the same backups, in the same order, as a full read."""
    parsed = []
    real = catalog_index.manifest_from_doc
    monkeypatch.setattr(
        catalog_index, "manifest_from_doc", lambda doc, where: parsed.append(doc["id"]) or real(doc, where)
    )
    deferred = catalog_index.read(_store_of(two), two.policy_name, deferred=True).listing.backups
    assert parsed == [two.ids[1]]  # the newest
    parsed.clear()
    full = catalog_index.read(_store_of(two), two.policy_name).listing.backups
    assert sorted(parsed) == sorted(two.ids)
    assert [(b.id, b.recovery_point, b.missing) for b in deferred] == [
        (b.id, b.recovery_point, b.missing) for b in full
    ]
    assert deferred == full and [b.manifest for b in deferred] == [b.manifest for b in full]


def _corrupt(s, which: int, change) -> None:
    doc = json.loads(index_file(s).read_text())
    change(doc["backups"][s.ids[which]]["manifest"])
    index_file(s).write_text(json.dumps(doc))


@pytest.mark.parametrize("which,change,deferred_reads", [
    (1, lambda m: m.update(database=5), False),  # the newest: parsed now, as in a full read
    (0, lambda m: m.update(objects=[]), False),  # nothing to restore: checked now
    (0, lambda m: m["objects"][0].update(size="12"), False),
    (0, lambda m: m.update(recovery_point="yesterday"), False),
    (0, lambda m: m.update(id="20200101T000000Z-000000"), False),  # not the backup its key names
    (0, lambda m: m.update(kind=["x"]), False),  # unhashable kind and role: once a traceback
    (0, lambda m: m["objects"][0].update(role=["dump"]), False),
    (0, lambda m: m.update(kind="weird"), False),
    (0, lambda m: m["objects"][0].update(key="../" + m["objects"][0]["key"]), False),  # leaves its folder
    (0, lambda m: m["objects"][0].update(sha256="x" * 64), False),
    (0, lambda m: m.update(completed_at="soon"), False),  # what a report publishes: checked now too
    (0, lambda m: m["sizes"].update(stored_bytes=-1), False),
    (0, lambda m: m["sizes"].pop("plain_bytes"), False),
    (0, lambda m: m["sizes"].update(database_bytes="7"), False),
    (0, lambda m: m.update(version=99), False),  # a newer drtool's: nothing of it is published
    (0, lambda m: m.update(encryption="garbage"), False),  # its recipients are published
    (0, lambda m: m.update(database=5), True),  # a field of an older entry: checked when it is used
])  # fmt: skip
def test_a_corrupt_index_entry_is_refused_by_a_deferred_read_when_its_answer_needs_it(two, which, change,
                                                                                     deferred_reads):  # fmt: skip
    _corrupt(two, which, change)
    where = f"{two.policy_name}/backups/{two.ids[which]}.manifest.json"
    with pytest.raises(catalog_index.IndexUnusable, match=f"catalog index entry {two.ids[which]}: .*{where}"):
        catalog_index.read(_store_of(two), two.policy_name)
    if not deferred_reads:
        with pytest.raises(catalog_index.IndexUnusable, match=f"catalog index entry {two.ids[which]}"):
            catalog_index.read(_store_of(two), two.policy_name, deferred=True)
        return
    older = catalog_index.read(_store_of(two), two.policy_name, deferred=True).listing.backups[1]
    assert older.id == two.ids[0] and not older.missing
    from drtool.records import ManifestInvalid

    with pytest.raises(ManifestInvalid, match=f"{where}: invalid manifest: 'database' has the wrong type"):
        _ = older.record


OTHERWISE = [
    ("recovery_point", lambda t: t.replace("Z", "+00:00")),
    ("completed_at", lambda t: t.replace("-", "").replace(":", "")),
]  # the same moment, written otherwise


@pytest.mark.parametrize("field,written", OTHERWISE)
def test_a_deferred_read_takes_times_only_as_drtool_writes_them(two, field, written):
    """A report publishes an older entry's times as they stand (and sorted its rows by them as
    text); the manifest's parse writes them anew. The same moment written otherwise is read by the
    full parse and refused by the deferred read, which sends the report to the manifests."""
    _corrupt(two, 0, lambda m: m.update({field: written(m[field])}))
    assert [b.id for b in catalog_index.read(_store_of(two), two.policy_name).listing.backups] == two.ids[::-1]
    with pytest.raises(catalog_index.IndexUnusable, match=f"'{field}' is not written as drtool writes times"):
        catalog_index.read(_store_of(two), two.policy_name, deferred=True)


@pytest.mark.parametrize("field,value,status_warns", [("database", 5, False), ("kind", ["x"], True)])
def test_status_and_list_with_a_corrupt_older_index_entry_answer_as_the_manifests_do(two, field, value,
                                                                                     status_warns):  # fmt: skip
    """A field status does not use is checked when used (never, by status); one it needs (the
    kind names the payload to look for) sends it to the manifests, as it sends list."""
    before = two.cli("status", "-p", str(two.policy), "--json")
    _corrupt(two, 0, lambda m: m.update({field: value}))
    st = two.cli("status", "-p", str(two.policy), "--json")
    clean(st, before.code)  # degraded: no drill yet
    assert ("reading the manifests instead" in st.err) == status_warns, st.err
    assert st.json["policies"][two.policy_name]["backups"] == before.json["policies"][two.policy_name]["backups"] == 2
    ids, err = listed(two)
    assert ids == two.ids[::-1] and err.count("catalog index entry") == 1 and "reading the manifests instead" in err


@pytest.mark.parametrize("field,value,warns", [("database", 5, False), ("started_at", "x", False),
                                               ("completed_at", "not a time", True), ("encryption", [], True),
                                               ("encryption", {"recipients": 5}, True),
                                               ("recovery_point", "2020-01-01T00:00:00+00:00", True)])  # fmt: skip
def test_a_report_with_a_corrupt_older_index_entry_answers_as_the_manifests_do(two, field, value, warns):
    """A report publishes the outline of every backup (id, times, sizes, sha256): read from the
    index, that is all it checks of the older entries (a fleet report parsed 100,000 manifests
    whole, a fifth of its CPU). A fault there sends it to the manifests, saying so; a fault in
    a field it does not publish changes nothing it says."""
    args = ("report", "-p", str(two.policy), "--format", "json", "-o", "-", "--from", "2000-01-01",
            "--to", "2100-01-01")  # fmt: skip
    before = two.cli(*args)
    _corrupt(two, 0, lambda m: m.update({field: value}))
    after = two.cli(*args)
    clean(after, before.code)
    assert ("reading the manifests instead" in after.err) == warns, after.err
    assert _stable(after.json) == _stable(before.json)
    assert [b["id"] for b in after.json["policies"][0]["inventory"]] == two.ids[::-1]


@pytest.mark.parametrize("encryption,refused", [(None, False), ({"recipients": None}, False),
                                               ({"recipients": ["age1notadict"]}, True),
                                               ({"recipients": 5}, True)])  # fmt: skip
def test_status_of_a_newest_backup_with_odd_recipients_says_it_cannot_decrypt(two, encryption, refused):
    """A manifest's encryption block is optional to its parser: status's restore check read it as
    a dict of dicts and failed with a traceback. An entry whose recipients are not a list of
    recipients is refused as the report would publish them (reading the manifests, here intact);
    in a manifest itself, the parser takes them and status says it cannot decrypt."""
    _corrupt(two, 1, lambda m: m.update(encryption=encryption))
    st = two.cli("status", "-p", str(two.policy), "--json")
    clean(st, 3)
    assert ("reading the manifests instead" in st.err) == refused, st.err
    if refused:
        assert st.json["components"]["restore"] == "ok"
        manifest = index_file(two).parent / "backups" / f"{two.ids[1]}.manifest.json"
        doc = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**doc, "encryption": encryption}))
        st = two.cli("status", "-p", str(two.policy), "--json")
        clean(st, 3)
    assert "matches none of the recipients of the newest backup" in st.json["components"]["restore"]
