"""Malformed input to the two parsers that read untrusted bytes from the store: the age header and
payload reader, and the pg_dump archive scanner. Whatever the bytes, they end in the parser's own
error (or a result), promptly: never another exception, never a hang."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drtool.crypto import age
from drtool.dumpscan import DumpScanner, UnsupportedArchive

TINY_DUMP = (Path(__file__).parent / "data" / "tiny.dump").read_bytes()  # pg_dump -Fc -Z0 of 3 tables + a blob
IDENT = age.Identity.generate()
GOOD_AGE = age.encrypt_bytes(b"payload " * 20_000, [IDENT.recipient])  # 3 STREAM chunks
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def mutated(base: bytes):
    """Flip, cut, insert or repeat bytes of a valid input: the shapes that reach deep into a parser."""
    n = len(base)
    return st.one_of(
        st.binary(max_size=4096),
        st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
            lambda t: base[: t[0]] + bytes([base[t[0]] ^ t[1]]) + base[t[0] + 1 :]
        ),
        st.integers(0, n).map(lambda i: base[:i]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(
            lambda t: base[: t[0]] + t[1] + base[t[0] :]
        ),
        st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda t: base[: t[0]] + base[t[1] :]),
    )


def decrypt(data: bytes) -> bytes:
    return b"".join(age.decrypt_stream(io.BytesIO(data), [IDENT]))


def test_the_valid_inputs_are_valid():
    assert decrypt(GOOD_AGE) == b"payload " * 20_000
    s = DumpScanner()
    s.feed(TINY_DUMP)
    assert s.finish().row_counts() == {"public.a": 25, "public.b": 3, "public.empty": 0}


@FUZZ
@given(mutated(GOOD_AGE))
def test_age_reader_fails_only_with_age_errors(data):
    try:
        out = decrypt(data)
    except age.AgeError:
        return
    assert out == b"payload " * 20_000  # a change age does not authenticate cannot alter the payload


@FUZZ
@given(st.binary(max_size=2048))
def test_age_header_reader_fails_only_with_header_errors(data):
    try:
        age.read_header(io.BytesIO(b"age-encryption.org/v1\n" + data))
    except age.AgeError:
        pass


@FUZZ
@given(mutated(TINY_DUMP), st.integers(1, 700))
def test_dump_scanner_fails_only_as_unsupported(data, piece):
    s = DumpScanner()
    for i in range(0, len(data), piece):
        s.feed(data[i : i + piece])
    try:
        info = s.finish()
    except UnsupportedArchive:
        return
    assert all(n >= 0 for n in info.row_counts().values())
