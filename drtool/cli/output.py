"""What every command shares for its result on stdout: JSON documents, invalid policy files,
colour, and the exit code a fleet ends with."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from .. import jsontext
from ..errors import EXIT_USAGE
from ..policy import InvalidPolicy

# 2: every command has one shape whatever the number of policies (backup, prune, drill always
# in their list form); 1 had a single-object form for one policy.
JSON_SCHEMA_VERSION = 2

# Policy files of a fleet that did not validate: named in the output and the metrics, never run,
# and the command's exit code is at least EXIT_USAGE (see worst()).
INVALID: list[InvalidPolicy] = []


def invalid_json() -> list[dict[str, Any]]:
    return [{"file": str(b.source), "name": b.name, "problems": list(b.problems)} for b in INVALID]


def emit_json(doc: dict[str, Any]) -> None:
    """The command's result: schema_version first, invalid_policies last when a file was invalid."""
    extra = {"invalid_policies": invalid_json()} if INVALID else {}
    click.echo(jsontext.dumps({"schema_version": JSON_SCHEMA_VERSION, **doc, **extra}, default=str))


def emit_json_rows(key: str, rows: Iterable[dict[str, Any]], after: Callable[[], dict[str, Any]] | None = None) -> None:
    """emit_json({key: rows}), byte for byte, written row by row as the rows come: a fleet's
    list never holds every row and a rendered copy of them at once. `after`: the keys that follow
    `key` in that document, asked for once the rows are written (what they gathered on the way)."""
    out = sys.stdout  # click.get_text_stream is deprecated (Click 9 drops it)
    out.write("{\n" + f'  "schema_version": {JSON_SCHEMA_VERSION},\n  {json.dumps(key)}: [')
    first = True
    for row in rows:
        out.write(("\n    " if first else ",\n    ") + jsontext.dumps(row, default=str, margin="    "))
        first = False
    out.write("]" if first else "\n  ]")
    for k, v in (after() if after else {}).items():
        out.write(f",\n  {json.dumps(k)}: " + jsontext.dumps(v, default=str, margin="  "))
    if INVALID:
        out.write(',\n  "invalid_policies": ' + jsontext.dumps(invalid_json(), default=str, margin="  "))
    out.write("\n}\n")
    out.flush()


def echo_invalid() -> None:
    """Text output: one line per problem of each invalid policy file (not run)."""
    for bad in INVALID:
        for line in bad.problems:
            click.echo(f"INVALID (not run) {line}")


def worst(code: int) -> int:
    """A fleet with an invalid policy file exits at least EXIT_USAGE, whatever the others did."""
    return max(code, EXIT_USAGE) if INVALID else code


def colour_enabled(stream=None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


_COLOURS = {"ok": "green", "passed": "green", "healthy": "green", "warn": "yellow", "degraded": "yellow"}


def paint(word: str, key: str | None = None) -> str:
    """`word` coloured by what it says (red for failures) when colour is enabled."""
    if not colour_enabled():
        return word
    return click.style(word, fg=_COLOURS.get((key or word).strip().lower(), "red"), bold=True)
