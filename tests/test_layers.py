"""The layering of STYLE.md, enforced: adapters are the only importers of their libraries,
domain code never prints or exits, and imports only point down."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "drtool"

OWNERS = {  # third-party module -> the only package paths allowed to import it
    "boto3": ("storage/",),
    "botocore": ("storage/",),
    "cryptography": ("crypto/",),
    "tomllib": ("policy/",),
    "psycopg": ("postgres.py",),
    "zstandard": ("compress.py",),
    "click": ("cli/",),
    "prometheus_client": ("metrics.py",),
}
FOUNDATION = {"errors.py", "secrets.py", "clock.py", "durations.py", "bech32.py", "__init__.py"}


def modules():
    for f in PKG.rglob("*.py"):
        yield f.relative_to(PKG).as_posix(), ast.parse(f.read_text())


def imported(tree) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_libraries_are_imported_only_by_their_adapter():
    for rel, tree in modules():
        for name in imported(tree):
            top = name.split(".")[0]
            if top in OWNERS:
                assert rel.startswith(OWNERS[top]), f"{rel} imports {name}"


def test_only_the_cli_prints_or_exits():
    for rel, tree in modules():
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"{rel} calls print()")
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                raise AssertionError(f"{rel} calls sys.exit")


def test_foundation_uses_only_the_standard_library_and_itself():
    for rel, tree in modules():
        if rel not in FOUNDATION:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert (node.module or "").split(".")[0] + ".py" in FOUNDATION, f"{rel} imports .{node.module}"
        for name in imported(tree):
            assert name.split(".")[0] not in OWNERS, f"{rel} imports {name}"


def test_nothing_below_the_cli_imports_the_cli_or_app():
    for rel, tree in modules():
        if rel.startswith(("cli/", "app/")) or rel == "__main__.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                mod = (node.module or "").split(".")[0]
                assert mod not in ("cli", "app"), f"{rel} imports {mod}"
