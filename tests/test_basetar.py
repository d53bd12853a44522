"""The tar walker that reads a base backup's record on the way to the store (drtool/basetar.py),
and the physical fields of a manifest (drtool/records.py)."""

from __future__ import annotations

import datetime as dt
import io
import random
import tarfile

import pytest

from drtool import basetar
from drtool.app.physical import needed_segments
from drtool.records import ManifestInvalid, PhysicalInfo, parse_manifest, serialise_manifest

LABEL = (
    b"START WAL LOCATION: 0/61000028 (file 000000010000000000000061)\n"
    b"CHECKPOINT LOCATION: 0/61000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
    b"START TIME: 2026-11-30 07:30:01 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n"
)
MANIFEST = (
    b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n'
    + b"".join(b'{ "Path": "base/1/%d", "Size": 8192 },\n' % i for i in range(3000))
    + b'],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/61000028", "End-LSN": "0/62000100" }\n],\n'
    b'"Manifest-Checksum": "00"}\n'
)
SYSID = 7312345678901234567


def _tar(members: dict[str, bytes], *, long_name: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT if long_name else tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("pg_wal")
        d.type = tarfile.DIRTYPE
        t.addfile(d)
    return out.getvalue()


def _feed(data: bytes, seed: int = 1) -> basetar.BaseTarInfo:
    rnd, s, i = random.Random(seed), basetar.TarScanner(), 0
    while i < len(data):
        n = rnd.choice([1, 7, 511, 512, 513, 4096, 65536])
        s.feed(data[i : i + n])
        i += n
    return s.finish()


def _members(**extra: bytes) -> dict[str, bytes]:
    return {
        "backup_label": LABEL,
        "global/pg_control": SYSID.to_bytes(8, "little") + bytes(8184),
        "base/1/1259": random.Random(2).randbytes(200_000),
        **extra,
        "backup_manifest": MANIFEST,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tar_walker_finds_the_backup_range_whatever_the_piece_sizes(seed):
    info = _feed(_tar(_members()), seed)
    rng = basetar.backup_range(info)
    assert (rng.timeline, rng.start_lsn, rng.end_lsn) == (1, "0/61000028", "0/62000100")
    assert rng.start_time == dt.datetime(2026, 11, 30, 7, 30, 1, tzinfo=dt.UTC)
    assert int.from_bytes(info.pg_control_head[:8], "little") == SYSID
    assert len(info.manifest_tail) <= basetar.MANIFEST_TAIL  # the manifest is never held whole


def test_tar_walker_follows_gnu_long_names():
    long = "base/16384/" + "x" * 120
    info = _feed(_tar(_members(**{long: b"abc"}), long_name=True))
    assert basetar.backup_range(info).end_lsn == "0/62000100"


def test_a_tar_cut_short_is_refused():
    data = _tar(_members())
    s = basetar.TarScanner()
    s.feed(data[: len(data) // 2])
    with pytest.raises(basetar.BaseTarInvalid, match="ended before"):
        s.finish()


def test_a_tar_without_backup_label_is_not_a_base_backup():
    members = _members()
    del members["backup_label"]
    with pytest.raises(basetar.BaseTarInvalid, match="backup_label"):
        basetar.backup_range(_feed(_tar(members)))


def test_garbage_is_not_a_tar():
    s = basetar.TarScanner()
    with pytest.raises(basetar.BaseTarInvalid, match="checksum"):
        s.feed(b"not a tar at all" * 100)


def _physical(**kw) -> PhysicalInfo:
    t = dt.datetime(2026, 11, 30, 7, 30, tzinfo=dt.UTC)
    base = dict(sysid=str(SYSID), timeline=1, start_lsn="0/61000028", end_lsn="0/63000000", wal_segment_size=1 << 24,
                pg_version="15", start_time=t, end_time=t)  # fmt: skip
    return PhysicalInfo(**{**base, **kw})


def test_needed_segments_run_from_start_to_the_segment_before_the_end_lsn():
    names = [s.name for s in needed_segments(_physical())]
    assert names == ["000000010000000000000061", "000000010000000000000062"]


def test_physical_manifest_round_trips_and_logical_ones_stay_as_they_were(tmp_path):
    from drtool.records import Manifest, ManifestObject, Sizes

    t = dt.datetime(2026, 11, 30, 7, 30, tzinfo=dt.UTC)
    common = dict(id="20261130T073000Z-abcdef", policy="p", database="db", server_version="15.18",
                  server_version_num=150018, pg_dump_version="15.18", recovery_point=t, started_at=t,
                  completed_at=t, sizes=Sizes(1, 1), tables={})  # fmt: skip
    m = Manifest(**common, objects=(ManifestObject("base", "base.tar.zst.age", 1, "0" * 64),), kind="physical",
                 physical=_physical())  # fmt: skip
    back = parse_manifest(serialise_manifest(m), "x")
    assert back == m and back.dump.role == "base" and back.physical.sysid == str(SYSID)
    logical = Manifest(**common, objects=(ManifestObject("dump", "dump.zst.age", 1, "0" * 64),))
    raw = serialise_manifest(logical)
    assert b'"kind"' not in raw and b'"physical"' not in raw
    assert parse_manifest(raw, "x").kind == "logical"


def test_physical_manifest_without_its_record_is_invalid():
    import json

    from drtool.records import Manifest, ManifestObject, Sizes, manifest_to_dict

    t = dt.datetime(2026, 11, 30, 7, 30, tzinfo=dt.UTC)
    m = Manifest(id="20261130T073000Z-abcdef", policy="p", database="db", server_version="15.18",
                 server_version_num=150018, pg_dump_version="15.18", recovery_point=t, started_at=t, completed_at=t,
                 sizes=Sizes(1, 1), tables={}, objects=(ManifestObject("base", "base.tar.zst.age", 1, "0" * 64),),
                 kind="physical", physical=_physical())  # fmt: skip
    doc = manifest_to_dict(m)
    doc["physical"]["end_lsn"] = "not an lsn"
    with pytest.raises(ManifestInvalid, match="end_lsn"):
        parse_manifest(json.dumps(doc).encode(), "x")
    del doc["physical"]
    with pytest.raises(ManifestInvalid, match="'physical' is missing"):
        parse_manifest(json.dumps(doc).encode(), "x")


def test_pieces_reader_returns_exactly_what_was_fed_for_any_read_size():
    from drtool.app.datadir import PiecesReader

    data = random.Random(5).randbytes(300_000)
    pieces = [data[:1], data[1:70_000], b"", data[70_000:]]
    for n in (1, 511, 10240, 1 << 20):
        r, got = PiecesReader(iter(pieces)), []
        while chunk := r.read(n):
            assert len(chunk) <= n
            got.append(chunk)
        assert b"".join(got) == data and r.size == len(data)
    assert PiecesReader(iter(pieces)).read() == data


@pytest.mark.parametrize("args", [["wal", "fetch", "000000010000000000000001"],
                                  ["wal", "fetch", "-p", "/nonexistent.toml", "000000010000000000000001", "/tmp/x"],
                                  ["wal", "fetch", "--bogus"]])  # fmt: skip
def test_wal_fetch_exits_200_for_bad_usage_so_recovery_never_reads_it_as_not_archived(args):
    from helpers import run_cli

    r = run_cli(*args)
    assert r.code == 200, r.err
    assert "Traceback" not in r.err
