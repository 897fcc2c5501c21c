"""rocketlite's HPACK decoder against the hpack package's encoder and decoder (differential + fuzz)."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.protocols.grpc.hpack_decode import HpackDecoder, HpackError

names = st.sampled_from([b":path", b":method", b"content-type", b"x-mq-client-id", b"grpc-timeout", b"te", b"custom"])
values = st.binary(max_size=40)
blocks = st.lists(st.lists(st.tuples(names, values), min_size=1, max_size=8), min_size=1, max_size=6)


@given(blocks, st.booleans(), st.sampled_from([0, 256, 4096]))
@settings(max_examples=120, deadline=None)
def test_decodes_what_hpack_encodes(seq: list[list[tuple[bytes, bytes]]], huffman: bool, table: int) -> None:
    enc = hpack.Encoder()
    ours = HpackDecoder()
    theirs = hpack.Decoder()
    if table != 4096:
        enc.header_table_size = table
    for headers in seq:
        block = enc.encode(headers, huffman=huffman)
        assert ours.decode(block) == [tuple(h) for h in theirs.decode(block, raw=True)] == headers


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_hpack_error(data: bytes) -> None:
    try:
        HpackDecoder(max_header_list_size=4096).decode(data)
    except HpackError:
        pass


def test_limits() -> None:
    enc = hpack.Encoder()
    with pytest.raises(HpackError):
        HpackDecoder(max_header_list_size=100).decode(enc.encode([(b"x", b"y" * 200)]))
    with pytest.raises(HpackError):
        HpackDecoder(max_table_size=100).decode(b"\x3f\xe1\x1f")  # size update to 4096 > 100
    with pytest.raises(HpackError):
        HpackDecoder().decode(b"\xff\xff\xff\xff\xff\xff\x7f")  # integer overflow / bad index
