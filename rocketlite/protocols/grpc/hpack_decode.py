"""A lean HPACK (RFC 7541) decoder for the gRPC server.

The ``hpack`` package's decoder is correct but logs every field and builds an object per field;
for a server that decodes one header block per call that was the largest single cost. This one
does the same work in one loop over the block: indexed fields, literals with and without
indexing, never-indexed literals, dynamic table size updates and evictions, with limits on the
table size (our SETTINGS_HEADER_TABLE_SIZE) and on the decoded header list. Huffman strings are
decoded by ``hpack``'s table-driven decoder. Pure: no I/O.
"""

from __future__ import annotations

from collections import deque

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_NSTATIC = len(_STATIC)


class HpackError(Exception):
    """The header block cannot be decoded (a connection-level COMPRESSION_ERROR)."""


class HpackDecoder:
    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 64 * 1024) -> None:
        self.max_allowed_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self._max_size = max_table_size
        self._size = 0
        self._dyn: deque[tuple[bytes, bytes]] = deque()

    def _get(self, idx: int) -> tuple[bytes, bytes]:
        if 0 < idx <= _NSTATIC:
            return _STATIC[idx - 1]
        j = idx - _NSTATIC - 1
        if 0 <= j < len(self._dyn):
            return self._dyn[j]
        raise HpackError(f"header index {idx} out of range")

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        dyn = self._dyn
        if size > self._max_size:
            dyn.clear()
            self._size = 0
            return
        dyn.appendleft((name, value))
        self._size += size
        while self._size > self._max_size:
            n, v = dyn.pop()
            self._size -= len(n) + len(v) + 32

    def _resize(self, size: int) -> None:
        if size > self.max_allowed_table_size:
            raise HpackError("dynamic table size update above the allowed maximum")
        self._max_size = size
        dyn = self._dyn
        while self._size > size and dyn:
            n, v = dyn.pop()
            self._size -= len(n) + len(v) + 32

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        n = len(data)
        i = 0
        total = 0
        limit = self.max_header_list_size
        seen_field = False
        while i < n:
            b = data[i]
            if b & 0x80:  # indexed field
                idx, i = _int(data, i, 7, n)
                if idx == 0:
                    raise HpackError("index 0")
                field = self._get(idx)
            elif b & 0x60 == 0x20:  # dynamic table size update: only at the start of a block
                if seen_field:
                    raise HpackError("table size update after a header field")
                size, i = _int(data, i, 5, n)
                self._resize(size)
                continue
            else:  # literal with incremental indexing (01), without indexing (0000) or never indexed (0001)
                indexing = bool(b & 0x40)
                idx, i = _int(data, i, 6 if indexing else 4, n)
                if idx:
                    name = self._get(idx)[0]
                else:
                    name, i = _str(data, i, n)
                value, i = _str(data, i, n)
                field = (name, value)
                if indexing:
                    self._add(name, value)
            seen_field = True
            total += len(field[0]) + len(field[1]) + 32
            if total > limit:
                raise HpackError("header list too large")
            out.append(field)
        return out


def _int(data: bytes, i: int, prefix: int, n: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    v = data[i] & mask
    i += 1
    if v < mask:
        return v, i
    shift = 0
    while True:
        if i >= n:
            raise HpackError("truncated integer")
        b = data[i]
        i += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i
        if shift > 28:
            raise HpackError("integer too large")


def _str(data: bytes, i: int, n: int) -> tuple[bytes, int]:
    if i >= n:
        raise HpackError("truncated string")
    huff = data[i] & 0x80
    length, i = _int(data, i, 7, n)
    end = i + length
    if end > n:
        raise HpackError("truncated string")
    raw = data[i:end]
    if huff:
        try:
            raw = decode_huffman(raw)
        except Exception as exc:
            raise HpackError(f"bad huffman string: {exc}") from None
    return bytes(raw), end
