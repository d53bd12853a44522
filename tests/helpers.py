"""Helpers shared by the integration tests: run the real CLI, write policies, make sample data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from services import PgCluster

from drtool.crypto import age

SAMPLE_SQL = r"""
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
INSERT INTO customers (name, note)
  SELECT 'customer ' || g, CASE WHEN g % 3 = 0 THEN E'multi\nline\ttab\\backslash' ELSE 'plain' END
  FROM generate_series(1, 500) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2),
                     created_at timestamptz DEFAULT now(), payload jsonb);
INSERT INTO orders (customer_id, total, payload)
  SELECT 1 + g % 500, g * 1.5, jsonb_build_object('k', g, 'u', 'ünïcødé ✓')
  FROM generate_series(1, 3000) g;
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed Case" (x int);
INSERT INTO "Odd Schema"."Mixed Case" VALUES (1), (2), (3);
CREATE TABLE empty_table (x int);
CREATE TABLE big_rows (id int, blob text);
INSERT INTO big_rows SELECT g, repeat(md5(g::text), 5000) FROM generate_series(1, 20) g;
CREATE TABLE measurements (id int, region text) PARTITION BY LIST (region);
CREATE TABLE measurements_eu PARTITION OF measurements FOR VALUES IN ('eu');
CREATE TABLE measurements_us PARTITION OF measurements FOR VALUES IN ('us');
INSERT INTO measurements SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END FROM generate_series(1, 101) g;
CREATE VIEW big_customers AS SELECT * FROM customers WHERE id > 100;
CREATE FUNCTION add_one(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1';
"""

EXPECTED_ROWS = {
    "Odd Schema.Mixed Case": 3,
    "public.big_rows": 20,
    "public.customers": 500,
    "public.empty_table": 0,
    "public.measurements_eu": 50,
    "public.measurements_us": 51,
    "public.orders": 3000,
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)

    @property
    def only(self):
        """The one item of a command's list-shaped JSON (backup: backups, drill: drills, prune:
        policies), for a run over one policy."""
        doc = self.json
        (key,) = [k for k in ("backups", "drills", "policies") if isinstance(doc.get(k), list)]
        (item,) = doc[key]
        return item


def run_cli(*args: str, env: dict[str, str | None] | None = None, timeout: int = 300, cwd: str | None = None) -> Result:
    """The real drtool command line, in a child process, as cron would run it."""
    full_env = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    r = subprocess.run(
        [sys.executable, "-m", "drtool", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )
    return Result(r.returncode, r.stdout, r.stderr)


@dataclass
class Setup:
    """A source database with sample data, a key pair, and a policy pointing at a store."""

    pg: PgCluster
    db: str
    policy: Path
    key: Path
    recipient: str
    env: dict[str, str | None]
    store_url: str

    def target_db(self) -> str:
        name = f"restore_{uuid.uuid4().hex[:8]}"
        self.pg.create_db(name)
        return name

    def cli(self, *args: str, timeout: int = 300, cwd: str | None = None) -> Result:
        return run_cli(*args, env=self.env, timeout=timeout, cwd=cwd)

    def restore(self, target_db: str, *extra: str) -> Result:
        """drtool restore of this policy into target_db, authenticating as the tests do."""
        return self.cli(
            "restore",
            "-p",
            str(self.policy),
            "--target",
            self.pg.dsn(target_db),
            "--target-password-env",
            "TEST_PGPASSWORD",
            *extra,
        )


def drill_setup(pg: PgCluster, tmp_path: Path, scratch_root: Path, drill_toml: str) -> Setup:
    """A folder-store setup whose drills build their scratch servers under scratch_root."""
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"', extra_toml=drill_toml)
    s.env["TMPDIR"] = str(scratch_root)
    return s


def template_db(pg: PgCluster, *sql: str) -> str:
    """A database loaded with `sql` (default: SAMPLE_SQL) once, for make_setup(template=...): a
    module's tests each get their own copy of it (CREATE DATABASE ... TEMPLATE copies the files,
    far cheaper than loading the data again). Drop it with pg.psql(f'DROP DATABASE "{name}"')."""
    name = f"tmpl_{uuid.uuid4().hex[:8]}"
    pg.create_db(name)
    for statement in sql or (SAMPLE_SQL,):
        pg.psql(statement, db=name)
    return name


def make_setup(
    pg: PgCluster,
    tmp_path: Path,
    storage_toml: str,
    *,
    sample: str = SAMPLE_SQL,
    extra_toml: str = "",
    init: bool = True,
    template: str | None = None,
) -> Setup:
    """Source database, keys and policy; then `drtool init` creates the store root, as a user
    must before the first backup (init=False for a test of a missing or unreachable store).
    template: a database to copy instead of loading `sample` (see `template_db`)."""
    db = f"src_{uuid.uuid4().hex[:8]}"
    if template:
        pg.psql(f'CREATE DATABASE "{db}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    else:
        pg.create_db(db)
        pg.psql(sample, db=db)
    ident = age.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"# public key: {ident.recipient}\n{ident.encode()}\n")
    key.chmod(0o600)
    policy = tmp_path / "policy.toml"
    policy.write_text(f"""
name = "{db.replace("_", "-")}"

[database]
dsn = "{pg.dsn(db)}"
password_env = "TEST_PGPASSWORD"

{storage_toml}

[encryption]
recipients = ["{ident.recipient}"]
identity_file = "{key}"

[objectives]
rpo = "6h"
rto = "30m"
{extra_toml}
""")
    env: dict[str, str | None] = {
        "TEST_PGPASSWORD": pg.PASSWORD,
        "PGPASSWORD": None,
        "PGPASSFILE": None,
        "DRTOOL_POLICY": None,
    }
    url = storage_toml.split('url = "')[1].split('"')[0]
    setup = Setup(pg, db, policy, key, ident.recipient, env, url)
    if init:
        r = setup.cli("init", "-p", str(policy))
        assert r.code == 0, f"drtool init failed: {r.err}"
    return setup


def backup_key(policy: str, backup_id: str, name: str = "dump.zst.age") -> str:
    """Where drtool writes a backup's object, relative to the store root: the flat layout
    (docs/storage-format.md); a backup written before 0.2 has `<id>/<name>` instead."""
    return f"{policy}/backups/{backup_id}.{name}"
