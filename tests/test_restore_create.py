"""restore into a database that does not exist yet: one line saying so without --create; with
--create, as a login role that is no superuser, the database is made and owned by the right role."""

from __future__ import annotations

import uuid

import pytest
from helpers import make_setup

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(pg, tmp_path):
    s = make_setup(pg, tmp_path, f'[storage]\nurl = "file://{tmp_path}/store"')
    assert s.cli("backup", "-p", str(s.policy)).code == 0
    return s


def restorer(pg) -> str:
    """A login role with CREATEDB and nothing more: the target server's own account."""
    role = f"restorer_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {role} LOGIN NOSUPERUSER CREATEDB PASSWORD '{pg.PASSWORD}'")
    return role


def restore_as(setup, role: str, db: str, *extra: str):
    return setup.cli("restore", "-p", str(setup.policy), "--target", setup.pg.dsn(db, user=role),
                     "--target-password-env", "TEST_PGPASSWORD", *extra)  # fmt: skip


def db_owner(pg, db: str) -> str:
    return pg.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'")


def test_missing_target_database_says_it_must_exist_and_how_to_create_it(setup):
    role, db = restorer(setup.pg), f"missing_{uuid.uuid4().hex[:8]}"
    r = restore_as(setup, role, db, "--no-owner")
    assert r.code == 1 and "Traceback" not in r.err
    lines = [ln for ln in r.err.splitlines() if ln.startswith("drtool: error")]
    assert len(lines) == 1 and f"/{db} does not exist" in lines[0] and "--create" in lines[0]
    assert f"createdb {db}" in lines[0]
    assert db_owner(setup.pg, db) == ""


def test_create_makes_the_database_as_a_non_superuser_and_restores_into_it(setup):
    role, db = restorer(setup.pg), f"created_{uuid.uuid4().hex[:8]}"
    r = restore_as(setup, role, db, "--create", "--no-owner", "--json")
    assert r.code == 0, r.err
    assert r.json["created_database"] is True and r.json["row_counts"]["mismatched"] == {}
    assert db_owner(setup.pg, db) == role
    tables = setup.pg.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", db=db)
    assert tables == role


def test_create_owns_the_database_by_role(setup):
    """--role ROLE --create: CREATE DATABASE ... OWNER ROLE, and the objects belong to ROLE."""
    login = restorer(setup.pg)
    app, db = f"app_{uuid.uuid4().hex[:8]}", f"created_{uuid.uuid4().hex[:8]}"
    setup.pg.psql(f"CREATE ROLE {app} NOLOGIN NOSUPERUSER")
    setup.pg.psql(f"GRANT {app} TO {login}")
    r = restore_as(setup, login, db, "--create", "--role", app)
    assert r.code == 0, r.err
    assert db_owner(setup.pg, db) == app


def test_create_leaves_an_existing_database_alone(setup):
    db = setup.target_db()
    r = setup.restore(db, "--create", "--json")
    assert r.code == 0, r.err
    assert r.json["created_database"] is False


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_restore_refused_for_ownership_says_how_a_non_superuser_restores(setup, jobs):
    """The dump's owners kept by default: a login role that is no superuser is refused by the
    server; the one line says which options make it work."""
    role, db = restorer(setup.pg), f"created_{uuid.uuid4().hex[:8]}"
    r = restore_as(setup, role, db, "--create", "--jobs", jobs)
    assert r.code == 1 and "Traceback" not in r.err
    lines = [ln for ln in r.err.splitlines() if ln.startswith("drtool: error")]
    assert len(lines) == 1 and f"/{db}" in lines[0] and "pg_restore failed" in lines[0]
    assert "--role ROLE" in lines[0] and "--no-owner" in lines[0]
