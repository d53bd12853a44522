"""Policy validation reads plain DSNs without libpq (importing psycopg costs every command ~150 ms),
and only those whose libpq reading is certain: anything else goes to libpq, so the check that a
DSN parses and carries no password is exactly as strict as before (drtool/postgres.py, plain_dsn)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from helpers import make_setup

from drtool import postgres
from drtool.crypto import age

INVALID = "invalid"  # libpq refuses to parse it (dsn_password_keys raises ValueError)

# (dsn, whether the fast path takes it, libpq's verdict: the secret keywords it finds, or INVALID)
TABLE = [
    ("postgresql://backup@db1.internal:5432/orders", True, []),
    ("postgres://backup@db1/orders", True, []),
    ("postgresql://db1", True, []),
    ("postgresql://", True, []),
    ("postgresql:///orders", True, []),
    ("postgresql://backup@", True, []),
    ("postgresql://backup@:5433/orders", True, []),
    ("postgresql://db1:99999/orders", True, []),  # libpq checks the port when it connects, not when it parses
    ("postgresql://db1/", True, []),
    ("host=db1 port=5432 dbname=orders user=backup", True, []),
    ("host=/var/run/postgresql dbname=orders", True, []),
    ("  host=db1\tdbname=orders\n", True, []),
    ("hostaddr=127.0.0.1 sslmode=require connect_timeout=5 application_name=nightly", True, []),
    ("host=db1,db2 port=5432,5433 target_session_attrs=read-write", True, []),
    ("dbname=orders", True, []),
    # the tricky ones: each goes to libpq
    ("postgresql://backup@db1/orders?%70assword=hunter2", False, ["password"]),
    ("postgresql://backup@db1/orders?sslpassword=hunter2", False, ["sslpassword"]),
    ("postgresql://backup:hunter2@db1/orders", False, ["password"]),
    ("postgresql://backup:@db1/orders", False, []),
    ("postgresql://backup@[::1]:5432/orders", False, []),
    ("postgresql://backup@db1/orders?sslmode=require", False, []),
    ("postgresql://db%31/orders", False, []),
    ("postgresql://backup@db1/?dbname=host%3Ddb1%20password%3Dhunter2", False, ["dbname.password"]),
    ("postgresql:/db1", False, INVALID),
    ("POSTGRESQL://db1/orders", False, INVALID),  # libpq's URI prefix is case-sensitive: a bad key=value
    ("host=::1 dbname=orders", False, []),
    ("host='db 1' dbname=orders", False, []),
    ("host=db1 dbname=orders password = 'hunter2'", False, ["password"]),
    ("host=db1 password=", False, []),
    ("host=db1 sslpassword=hunter2", False, ["sslpassword"]),
    ("host=db1 dbname='host=db2 password=hunter2'", False, ["dbname.password"]),
    ("dbname=postgresql://u:hunter2@db2/orders", False, ["dbname.password"]),
    ("host=db1 dbname=a=b", False, []),
    ("host = db1", False, []),
    ("host= dbname=orders", False, []),  # libpq skips the blank: host is 'dbname=orders'
    ("host=db\\1", False, []),
    ("host=db1 passwrd=hunter2", False, INVALID),  # an unknown keyword
    ("host=db1 Host=db2", False, INVALID),  # keywords are case-sensitive
    ("host=db1 dbname", False, INVALID),
    ("host=db1 service=prod", False, []),  # a service file may hold a password: never the fast path
    ("host=db1 passfile=/etc/pgpass", False, []),
    ("", False, []),
    ("   ", False, []),
]


def _verdict(check, dsn: str) -> list[str] | str:
    try:
        return check(dsn)
    except ValueError:
        return INVALID


@pytest.mark.parametrize(("dsn", "fast", "libpq"), TABLE)
def test_the_fast_path_takes_only_dsns_whose_libpq_verdict_is_certain(dsn, fast, libpq):
    assert _verdict(postgres.libpq_password_keys, dsn) == libpq  # what libpq itself says
    assert postgres.plain_dsn(dsn) is fast
    if fast:
        assert libpq == []  # the fast path's verdict: parses, no secret
    assert _verdict(postgres.dsn_password_keys, dsn) == libpq


@pytest.mark.parametrize("keyword", sorted(postgres._PLAIN_KEYWORDS))
def test_every_fast_path_keyword_is_one_libpq_knows(keyword):
    assert postgres.plain_dsn(f"{keyword}=x")
    assert postgres._parse(f"{keyword}=x")[keyword] == "x"


PIECES = [
    "postgresql://", "postgres://", "host", "dbname", "user", "password", "sslpassword", "service", "port",
    "=", " ", "\t", "'", "\\", ":", "@", "/", "?", "&", "%70", "%", "[", "]", ",", "db1", "5432", "x", "-", ".",
]  # fmt: skip


def test_the_fast_path_never_contradicts_libpq_on_random_dsns():
    """Random strings of the pieces that matter to either parser: whenever the fast path answers,
    libpq parses the string and finds no secret."""
    rng = random.Random(15)
    taken = 0
    for _ in range(20000):
        dsn = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9)))
        if postgres.plain_dsn(dsn):
            taken += 1
            assert _verdict(postgres.libpq_password_keys, dsn) == [], dsn
    assert taken > 100  # the comparison above ran on a fair share of strings


POLICY = """
name = "orders"
[database]
dsn = "{dsn}"
[storage]
url = "file://{store}"
[encryption]
recipients = ["{recipient}"]
"""

LOADED = """
import sys
from pathlib import Path
from drtool.policy import load_policy
load_policy(Path(sys.argv[1]))
print("psycopg" in sys.modules)
"""


def _loads_psycopg(tmp_path, dsn: str) -> bool:
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY.format(dsn=dsn, store=tmp_path / "store", recipient=age.Identity.generate().recipient))
    r = subprocess.run([sys.executable, "-c", LOADED, str(policy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip() == "True"


def test_validating_a_policy_with_a_plain_dsn_does_not_import_psycopg(tmp_path):
    assert not _loads_psycopg(tmp_path, "postgresql://backup@db1.internal:5432/orders")
    assert not _loads_psycopg(tmp_path, "host=db1 port=5432 dbname=orders user=backup")


def test_validating_a_policy_with_a_quoted_dsn_asks_libpq(tmp_path):
    assert _loads_psycopg(tmp_path, "host='db1' dbname=orders")


SHORT = """
import os, sys
sys.argv = ["drtool", *sys.argv[1:]]
from drtool import entry
real_exit = os._exit
def report(code):  # the CLI leaves through os._exit (no teardown): say what was imported first
    heavy = ("psycopg", "boto3", "botocore", "cryptography", "prometheus_client", "urllib.request")
    print("imported:", ",".join(m for m in heavy if m in sys.modules) or "-", file=sys.stderr, flush=True)
    real_exit(code)
os._exit = report
entry.main()
"""

SHORT_COMMANDS = [
    ("--help",),
    ("list", "-p", "{policy}", "--json"),
    ("report", "-p", "{policy}", "--format", "json", "-o", "-"),
    ("prune", "-p", "{policy}", "--dry-run"),
    ("verify", "-p", "{policy}", "--shallow"),
]


def test_short_commands_on_a_folder_store_import_no_heavy_library(pg, tmp_path):
    """psycopg (nothing connects), boto3 (no S3 store), cryptography (nothing signed or decrypted),
    prometheus_client and urllib.request (no metrics written, no notification sent)."""
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    assert s.cli("backup", "-p", str(s.policy)).code == 0
    for command in SHORT_COMMANDS:
        args = [a.format(policy=s.policy) for a in command]
        r = subprocess.run([sys.executable, "-c", SHORT, *args], capture_output=True, text=True)
        assert r.returncode == 0, (command, r.stderr)
        assert r.stderr.strip().splitlines()[-1] == "imported: -", (command, r.stderr)
