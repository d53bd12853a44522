"""Multipart parts are joined from the pipeline's pieces in one copy: every part but the last has
exactly the part size, and the bytes come out in order, whatever the pieces' sizes."""

from __future__ import annotations

import os
from collections import deque

from drtool.storage.s3 import _take


def test_parts_are_cut_exactly_from_uneven_pieces_in_order():
    data = os.urandom(100_000)
    sizes = [1, 7000, 123, 30_000, 5, 40_000, 22_871]
    pieces, pos = deque(), 0
    for n in sizes:
        pieces.append(data[pos : pos + n])
        pos += n
    assert pos == len(data)
    parts = [_take(pieces, 16_384) for _ in range(len(data) // 16_384)]
    rest = sum(len(p) for p in pieces)
    parts.append(_take(pieces, rest))
    assert all(len(p) == 16_384 for p in parts[:-1]) and len(parts[-1]) == len(data) % 16_384
    assert all(isinstance(p, bytes) for p in parts)
    assert b"".join(parts) == data
    assert not pieces
