"""Mutations of stored column chunks shared by the decoders' fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st


def mutate(stored: bytes, data) -> bytes:
    """``stored`` with bits flipped, bytes spliced in, replaced by random
    bytes or extended (drawn from the hypothesis ``data``)."""
    mode = data.draw(st.sampled_from(["flip", "splice", "random", "extend"]))
    buf = bytearray(stored)
    if mode == "flip" and buf:
        for pos in data.draw(st.lists(st.integers(0, 8 * len(buf) - 1), min_size=1, max_size=8)):
            buf[pos >> 3] ^= 1 << (pos & 7)
    elif mode == "splice" and buf:
        at = data.draw(st.integers(0, len(buf) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        buf[at:at + len(chunk)] = chunk
        del buf[len(stored):]
    elif mode == "random":
        buf = bytearray(data.draw(st.binary(max_size=len(stored) + 32)))
    else:
        buf += data.draw(st.binary(min_size=1, max_size=32))
    return bytes(buf)
