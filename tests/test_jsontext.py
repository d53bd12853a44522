"""drtool.jsontext writes what json.dumps(indent=2) writes, byte for byte: list --json, status --json
and the JSON report are a contract, and their bytes must not change with the encoder."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from collections import OrderedDict

import pytest

from drtool import jsontext


class Level(enum.IntEnum):
    LOW = 1


class Tag(str):
    pass


DOCS = [
    {},
    [],
    "",
    0,
    None,
    True,
    -1.5,
    {"a": {}, "b": [], "c": [{}], "d": [[]], "e": {"f": {"g": []}}},
    {"z": 1, "a": 2, "m": {"y": None, "b": True, "k": False}},
    {"text": 'quote " backslash \\ newline \n tab \t nul \x00 del \x7f', "u": "ünïcødé € 😀 \u2028"},
    {"floats": [0.1, 1e300, -0.0, 1.0, 2.5e-10, 123456789.123, math.inf, -math.inf, math.nan]},
    {"ints": [0, -7, 2**70, True, False], "big": -(2**64)},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key", "s": "str key"},
    {"tuple": (1, "two", (3.0, None)), "nested": [[1, [2, [3, {"x": (4,)}]]]]},
    {"enum": Level.LOW, "sub": Tag("tagged"), Tag("k"): OrderedDict(b=1, a=2)},
    {"when": dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC), "d": dt.date(2026, 1, 2), "set": {3}},
]


def _equal(a: str, b: str) -> None:
    assert a == b, f"{a!r}\n!=\n{b!r}"


@pytest.mark.parametrize("doc", DOCS, ids=range(len(DOCS)))
@pytest.mark.parametrize("margin", ["", "  ", "    "])
def test_the_same_bytes_as_json_dumps(doc, margin):
    _equal(jsontext.dumps(doc, default=str, margin=margin),
           json.dumps(doc, indent=2, default=str).replace("\n", "\n" + margin))  # fmt: skip


@pytest.mark.parametrize("doc", [d for d in DOCS if "set" not in str(d) and "key" not in str(d)])
def test_the_same_bytes_as_json_dumps_with_sorted_keys(doc):
    _equal(jsontext.dumps(doc, sort_keys=True), json.dumps(doc, indent=2, sort_keys=True))


def test_what_json_dumps_refuses_it_refuses():
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps({"a": {1, 2}})
    with pytest.raises(TypeError, match="keys must be"):
        jsontext.dumps({(1, 2): "tuple key"})
