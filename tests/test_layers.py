"""The layering of STYLE.md, enforced. Import rules are import-linter contracts in pyproject.toml
(scripts/test runs `lint-imports`); this file proves those contracts catch the import shapes an AST
check missed, and checks what is not an import rule: domain code never prints or exits."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "drtool"
LINT = Path(sys.executable).with_name("lint-imports")


def modules():
    for f in PKG.rglob("*.py"):
        yield f.relative_to(PKG).as_posix(), ast.parse(f.read_text())


def test_only_the_cli_prints_or_exits():
    for rel, tree in modules():
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"{rel} calls print()")
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                raise AssertionError(f"{rel} calls sys.exit")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, env=env)  # fmt: skip


def test_the_package_keeps_its_contracts():
    r = lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("catalog.py", "from . import app", "Layers"),
        ("retention.py", "from drtool import app", "Layers"),
        ("locks.py", "import drtool.cli.main", "Layers"),
        ("storage/local.py", "from .. import app", "Layers"),
        ("errors.py", "from . import catalog", "Layers"),
        ("reports/html.py", "from .. import postgres", "Pure domain"),
        ("retention.py", "import boto3", "Only storage talks to S3"),
        ("catalog.py", "import psycopg", "Only postgres talks to PostgreSQL"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(PKG, tmp_path / "drtool", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "drtool" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    r = lint(tmp_path)
    assert r.returncode != 0, r.stdout[-2000:]
    assert f"{contract}" in r.stdout and "BROKEN" in r.stdout


def test_use_cases_share_only_the_context_and_name_what_they_call():
    """No mixins sharing self: each use case is a UseCase on the command's one Context, and App
    is a facade holding them; run is given the backup and drill use cases it calls."""
    from drtool.app import App, Context
    from drtool.app.backup import BackupJobs
    from drtool.app.context import UseCase
    from drtool.app.drill import DrillJobs
    from drtool.app.evidence import EvidenceJobs
    from drtool.app.index import IndexJobs
    from drtool.app.init import InitJobs
    from drtool.app.physical import PhysicalJobs
    from drtool.app.pitr_drill import PitrDrillJobs
    from drtool.app.restore import RestoreJobs
    from drtool.app.schedule import ScheduleJobs
    from drtool.app.wal import WalJobs

    all_cases = (BackupJobs, RestoreJobs, DrillJobs, ScheduleJobs, EvidenceJobs, InitJobs, IndexJobs, WalJobs,
                 PhysicalJobs, PitrDrillJobs)  # fmt: skip
    for case in all_cases:
        assert case.__mro__ == (case, UseCase, object), case
    assert App.__mro__ == (App, object)
    app = App(Context(lock_wait=7))
    cases = [app.backups, app.restores, app.drills, app.schedule, app.evidence, app.setup, app.index, app.wal,
             app.physical, app.pitr_drills]  # fmt: skip
    assert {type(c) for c in cases} == set(all_cases)
    assert all(c.ctx is app.ctx for c in cases) and app.ctx.lock_wait == 7
    assert app.schedule.backups is app.backups and app.schedule.drills is app.drills
    assert app.schedule.physical is app.physical and app.schedule.pitr_drills is app.pitr_drills
    assert app.physical.backups is app.backups and app.physical.restores is app.restores
    assert app.pitr_drills.physical is app.physical and app.pitr_drills.drills is app.drills
