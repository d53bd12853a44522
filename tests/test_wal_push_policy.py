"""`wal push` reads the policy's [pitr] table without tomllib when the file is plain TOML
(drtool/walack.py pitr_table). Whatever the file, it gives what tomllib gives, or the same error."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drtool import walack

EXAMPLE = Path(__file__).resolve().parents[1] / "policies" / "example.toml"

PLAIN = """# a plain policy
name = "orders"   # comment after a value
[database]
dsn = 'postgresql:///orders?host=/run/postgresql'
[storage]
url = "s3://bucket/prefix"
[encryption]
recipients = ["age1abc", 'age1def',]
[[storage.copies]]
name = "two"
[[storage.copies]]
name = "three"
[pitr]
enabled = true
spool_dir = "/var/lib/drtool/spool"  # outside PGDATA
pgdata = '/var/lib/postgresql/15/main'
ack_timeout = "30s"
upload_workers = 4
[schedule]
base = "0 3 * * *"
"""


def tomllib_pitr(data: bytes):
    """What tomllib says: ("ok", the [pitr] table or None) or ("error", None)."""
    try:
        return "ok", repr(tomllib.loads(data.decode("utf-8")).get("pitr"))  # repr: nan == nan
    except ValueError:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return "error", None


def walack_pitr(data: bytes):
    try:
        return "ok", repr(walack.pitr_table(data))
    except ValueError:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return "error", None


def without_tomllib(data: bytes):
    """pitr_table with `import tomllib` failing: raises ImportError when the plain reader gave up."""
    saved = sys.modules.get("tomllib")
    sys.modules["tomllib"] = None  # type: ignore[assignment]  # makes `import tomllib` raise ImportError
    try:
        return walack.pitr_table(data)
    finally:
        sys.modules["tomllib"] = saved  # type: ignore[assignment]


def test_a_plain_policy_is_read_without_tomllib():
    assert without_tomllib(PLAIN.encode()) == tomllib.loads(PLAIN)["pitr"]
    assert without_tomllib(b'name = "x"\n') is None  # no [pitr]: the ack path is off


def test_the_example_policy_with_pitr_uncommented_is_read_without_tomllib():
    text = EXAMPLE.read_text() + '\n[pitr]\nenabled = true\nspool_dir = "/spool"\npgdata = "/pgdata"\n'
    assert without_tomllib(text.encode()) == {"enabled": True, "spool_dir": "/spool", "pgdata": "/pgdata"}


ODD = [
    "",
    "[pitr]\n",
    'name = "x"\n',
    # dotted keys and inline tables: tomllib's
    'pitr.spool_dir = "/a"\n',
    'pitr = { spool_dir = "/a" }\n',
    '[pitr]\nspool_dir.x = "/a"\n',
    '[pitr]\n"spool_dir" = "/a"\n',
    "[pitr]\n'spool_dir' = '/a'\n",
    '[pitr]\nspool_dir = "/a"\n[pitr.sub]\nx = 1\n',
    '[pitr.sub]\nx = 1\n[pitr]\nspool_dir = "/a"\n',
    '[ pitr ]\nspool_dir = "/a"\n',
    '[ "pitr" ]\nspool_dir = "/a"\n',
    '[[pitr]]\nspool_dir = "/a"\n',
    # [pitr] split or repeated, keys repeated: TOML errors
    '[pitr]\nspool_dir = "/a"\n[other]\nx = 1\n[pitr]\npgdata = "/b"\n',
    '[pitr]\nspool_dir = "/a"\nspool_dir = "/b"\n',
    '[pitr]\nspool_dir = "/a"\n[pitr]\n',
    'pitr = 1\n[pitr]\nspool_dir = "/a"\n',
    "[a]\nb = 1\n[a.b]\n",
    "[a.b]\n[a]\n",
    "[a.b]\n[a]\n[a]\n",
    "[a]\nx = 1\n[[a]]\n",
    "[[a]]\nx = 1\n[[a]]\nx = 2\n[pitr]\nspool_dir = '/s'\n",
    "[[a]]\nx = 1\nx = 2\n",
    "[[a]]\n[a]\n",
    "[[a]]\n[a.b]\n[[a]]\n[a.b]\n",
    "a = 1\n[a.b]\n",
    # comments, blanks, CRLF, control characters
    '# [pitr]\n[pitr] # the section\n  spool_dir = "/a" # no "quote" here\n\n',
    '[pitr]\r\nspool_dir = "/a"\r\n',
    '[pitr]\rspool_dir = "/a"\n',
    '[pitr]\nspool_dir = "/a" # bell \x07\n',
    '[pitr]\nspool_dir = "/a\x01"\n',
    '[pitr]\nspool_dir = "/a"\x7f\n',
    '[pitr]\nspool_dir = "/a\tb"\n',
    "\ufeff[pitr]\nspool_dir = '/a'\n",
    # strings: escapes, multi-line, literal, odd quoting
    '[pitr]\nspool_dir = "/a\\tb"\n',
    '[pitr]\nspool_dir = "/a\\u00e9"\n',
    '[pitr]\nspool_dir = "/a\\"b"\n',
    '[pitr]\nspool_dir = "/a\\q"\n',
    "[pitr]\nspool_dir = '/a\\b'\n",
    "[pitr]\nspool_dir = '''/a'''\n",
    '[pitr]\nspool_dir = """\n/a"""\n',
    '[pitr]\nspool_dir = ""\n',
    '[pitr]\nspool_dir = "/a"b"\n',
    '[pitr]\nspool_dir = "/a\n',
    "[pitr]\nspool_dir = '/a\"#b'\n",
    '[pitr]\nspool_dir = "/é/ü"\n',
    '[pitr]\nspool_dir = "/a" "/b"\n',
    # other values
    "[pitr]\nupload_workers = 4\nenabled = true\nack_timeout = 30\n",
    "[pitr]\nupload_workers = 04\n",
    "[pitr]\nupload_workers = +4\nprefetch = -0\n",
    "[pitr]\nupload_workers = 1_000\n",
    "[pitr]\nupload_workers = 0x10\n",
    "[pitr]\nupload_workers = 4.0\n",
    "[pitr]\nupload_workers = inf\n",
    "[pitr]\nenabled = True\n",
    "[pitr]\nenabled = truex\n",
    "[pitr]\nenabled =\n",
    "[pitr]\nenabled\n",
    "[pitr]\nwhen = 1979-05-27\n",
    "[pitr]\nx = [1, 'a', \"b\",]\n",
    "[pitr]\nx = [ ]\n",
    "[pitr]\nx = [,]\n",
    "[pitr]\nx = [1 2]\n",
    "[pitr]\nx = [[1], [2]]\n",
    "[pitr]\nx = [\n1]\n",
    "[pitr]\nx = [1,]]\n",
    "[pitr]\nx = 1,\n",
    "[pitr]\nx = true#c\n",
    "[pitr]\nx = { a = 1 }\n",
    # headers
    "[]\n",
    "[a]]\n",
    "[[a]\n",
    "[[a]]]\n",
    "[ [a]]\n",
    "[a.]\n",
    "[a . b]\nx = 1\n",
    "[a] x = 1\n",
    "[pitr\n",
]


@pytest.mark.parametrize("text", ODD)
def test_an_odd_policy_file_gives_what_tomllib_gives(text):
    data = text.encode("utf-8")
    assert walack_pitr(data) == tomllib_pitr(data)


def test_bytes_that_are_not_utf8_are_an_error_as_with_tomllib():
    data = b'[pitr]\nspool_dir = "/\xff"\n'
    assert walack_pitr(data) == tomllib_pitr(data) == ("error", None)


# Files assembled from the pieces policies are made of, plain and odd, in any order.
HEADERS = ["[pitr]", "[ pitr ]", "[pitr.x]", "[[pitr]]", "[a]", "[a.b]", "[[a]]", "[[a.b]]", "[b]", '["a"]', "[a", "[]"]
KEYS = ["spool_dir", "pgdata", "ack_timeout", "pitr", "a", "b", "x", "a.b", '"x"', "'y'", "", "spool dir"]
VALUES = ['"/s"', "'/l'", '"\\t"', '"a\\"b"', '""', "''", "'''m'''", '"""m"""', "1", "01", "-1", "+0", "1_0",
          "1.5", "true", "false", "[1, 'a']", "[]", "[1,]", "[[1]]", "{a = 1}", "1979-05-27",
          "nan", "x", "", '"u"x']  # fmt: skip
TAILS = ["", " ", "  # c", "# c", " \t", "\r", " x", "\x07"]
LINE = st.one_of(
    st.sampled_from(HEADERS),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.sampled_from(["", "# comment", "   ", "\t# [pitr]"]),
)
FILE = st.lists(st.tuples(LINE, st.sampled_from(TAILS)), max_size=14).map(
    lambda lines: "".join(line + tail + "\n" for line, tail in lines)
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILE)
def test_any_assembled_policy_file_gives_what_tomllib_gives(text):
    data = text.encode("utf-8")
    assert walack_pitr(data) == tomllib_pitr(data)


# Mostly well-formed files (distinct tables, distinct keys), so that many reach the plain reader's answer.
PLAIN_VALUES = ['"/s"', "'/l'", '""', "''", "1", "-1", "+0", "0", "true", "false", "[1, 'a']", "[]", '["x",]', '"#"']
TABLE = st.tuples(
    st.sampled_from(["[pitr]", "[ pitr ]", "[a]", "[b.c]", "[[d]]", "[[d]]", "[pitr.x]"]),
    st.dictionaries(st.sampled_from(["spool_dir", "pgdata", "ack_timeout", "upload_workers", "x"]),
                    st.one_of(st.sampled_from(PLAIN_VALUES), st.sampled_from(VALUES)), max_size=4),
    st.sampled_from(TAILS[:5]),
)  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TABLE, max_size=5))
def test_any_well_formed_policy_file_gives_what_tomllib_gives(tables):
    text = 'name = "x"\n' + "".join(
        f"{header}{tail}\n" + "".join(f"{k} = {v}{tail}\n" for k, v in keys.items()) for header, keys, tail in tables
    )
    data = text.encode("utf-8")
    assert walack_pitr(data) == tomllib_pitr(data)
