"""Bech32 (BIP 173) as age uses it for keys: no length limit, lower- or all upper-case."""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= _GEN[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise ValueError("invalid data")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    values = _convertbits(data, 8, 5, True)
    poly = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in values + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """(hrp, data) of a bech32 string; ValueError if malformed or the checksum fails."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("separator misplaced")
    hrp, rest = text[:pos], text[pos + 1 :]
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise ValueError("invalid prefix")
    try:
        values = [_CHARSET.index(c) for c in rest]
    except ValueError:
        raise ValueError("invalid character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("checksum mismatch")
    return hrp, bytes(_convertbits(values[:-6], 5, 8, False))
