"""The on-disk record codec of the LMDB store (pure: no I/O, no trio, no lmdb).

A commit-log record is one :class:`~rocketlite.core.message.Message` without its commit offset
(the LMDB key is the commit offset). The first byte is the format version, so a later format
can be added without migrating old data; :func:`decode_message` dispatches on it.

Format 1 (the fast path, nearly every record)::

    header  little-endian struct _V1 (fixed size):
            version=1, props format, queue_id, flag, sys_flag, born_timestamp, store_timestamp,
            queue_offset, reconsume_times, len(topic), len(tags), len(keys), len(born_host),
            len(properties)
    topic | tags | keys | born_host      UTF-8, lengths in the header
    properties                           nothing when empty; else, by the props-format byte:
                                         0: a cbor2 map (str -> str)
                                         1: UTF-8 of key NUL value NUL key NUL value ...
    body                                 the rest of the record, raw

The props-format byte was "reserved, 0" before format 1 learnt the NUL-separated encoding, so
every record written earlier says 0 (cbor2) and still decodes. The NUL-separated form is used
whenever it is unambiguous (no key or value contains NUL, all are strings); anything else keeps
cbor2. Why: ``cbor2.dumps`` of a small dict costs ~2.4-3 us on the CI box (mostly its per-call
encoder set-up) where one ``join`` plus a NUL count costs ~0.8 us (one UNIQ_KEY) to ~1.8 us (four
entries); it was the hottest line of the append path. Decoding by ``split`` is no slower than
``cbor2.loads`` (~1.8 vs ~2.0 us for four entries).

Format 2 (the fallback for anything format 1 cannot hold, e.g. an int beyond 32/64 bits or a
string longer than 64 KiB where the header has 16 bits): a cbor2 array of every field.

Why this shape (measured on the 2-core CI box with cbor2 6.2, a 100-byte body and four
properties, best of 9): cbor2 ``dumps`` of a dict per record ~95-130k/s; of a 14-item array
~95-127k/s (cbor2 pays roughly 0.3-1 us per container item); struct header + cbor2 only for the
properties map ~290-370k/s; a hand-written CBOR encoder in Python ~125-140k/s. Decoding: dict
~125k/s, array ~200k/s, format 1 ~210k/s. So cbor2 is kept where it earns its place (the open-ended
properties map, table values) and the fixed fields go through one ``struct.pack``.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Any

import cbor2

from rocketlite.core.message import Message

FORMAT_V1 = 1
FORMAT_V2 = 2

# the second header byte of format 1: how the properties are encoded
PROPS_CBOR = 0
PROPS_NUL = 1

_V1 = struct.Struct("<BBiiiqqqiHHHHI")
_V1_SIZE = _V1.size
_pack_v1 = _V1.pack
_unpack_v1 = _V1.unpack_from
_dumps = cbor2.dumps
_loads = cbor2.loads
_chain = chain.from_iterable


class CorruptRecord(ValueError):
    """A stored record that no known format decodes."""


def _encode_props(d: dict[str, str]) -> tuple[int, bytes]:
    """The properties' format byte and bytes: NUL-separated when unambiguous, else cbor2."""
    if not d:
        return PROPS_CBOR, b""
    try:
        s = "\x00".join(_chain(d.items()))
    except (TypeError, AttributeError):  # not a dict of strings
        return PROPS_CBOR, _dumps(d)
    if s.count("\x00") == 2 * len(d) - 1:
        return PROPS_NUL, s.encode()
    return PROPS_CBOR, _dumps(d)  # a key or value contains NUL itself


def encode_message(m: Message) -> bytes:
    """The record bytes of ``m`` (commit offset excluded: it is the key)."""
    try:
        topic = m.topic.encode()
        tags = m.tags.encode()
        keys = m.keys.encode()
        host = m.born_host.encode()
        pf, props = _encode_props(m.properties)
        head = _pack_v1(
            FORMAT_V1, pf, m.queue_id, m.flag, m.sys_flag, m.born_timestamp, m.store_timestamp,
            m.queue_offset, m.reconsume_times, len(topic), len(tags), len(keys), len(host), len(props),
        )
    except (struct.error, OverflowError):
        return _encode_v2(m)
    return b"".join((head, topic, tags, keys, host, props, m.body))


def encode_messages(msgs: list[Message]) -> list[bytes]:
    """``[encode_message(m) for m in msgs]``, with the strings a batch repeats (topic, born host,
    tags, keys: usually the same object for a whole publisher's batch) encoded once per run."""
    out: list[bytes] = []
    append = out.append
    pack = _pack_v1
    join = b"".join
    encode_props = _encode_props
    last_topic = last_host = last_tags = last_keys = None
    topic = host = tags = keys = b""
    lt = lh = lg = lk = 0
    for m in msgs:
        try:
            if m.topic is not last_topic:
                last_topic = m.topic
                topic = last_topic.encode()
                lt = len(topic)
            if m.born_host is not last_host:
                last_host = m.born_host
                host = last_host.encode()
                lh = len(host)
            if m.tags is not last_tags:
                last_tags = m.tags
                tags = last_tags.encode()
                lg = len(tags)
            if m.keys is not last_keys:
                last_keys = m.keys
                keys = last_keys.encode()
                lk = len(keys)
            pf, props = encode_props(m.properties)
            append(join((
                pack(FORMAT_V1, pf, m.queue_id, m.flag, m.sys_flag, m.born_timestamp, m.store_timestamp,
                     m.queue_offset, m.reconsume_times, lt, lg, lk, lh, len(props)),
                topic, tags, keys, host, props, m.body)))
        except (struct.error, OverflowError):
            append(_encode_v2(m))
    return out


def _encode_v2(m: Message) -> bytes:
    return bytes((FORMAT_V2,)) + _dumps(
        [m.topic, m.queue_id, m.body, m.tags, m.keys, m.properties, m.flag, m.sys_flag,
         m.born_timestamp, m.born_host, m.store_timestamp, m.reconsume_times, m.queue_offset]
    )


def decode_message(data: bytes | memoryview, commit_offset: int) -> Message:
    """The message stored in ``data`` at ``commit_offset``; :class:`CorruptRecord` if it is not one."""
    data = bytes(data)
    if not data:
        raise CorruptRecord("empty record")
    try:
        m = _decode(data, commit_offset)
    except CorruptRecord:
        raise
    except (struct.error, ValueError, TypeError, UnicodeDecodeError, cbor2.CBORError) as exc:
        raise CorruptRecord(f"bad record at {commit_offset}: {exc}") from exc
    if not isinstance(m.properties, dict):
        raise CorruptRecord(f"bad properties in record at {commit_offset}")
    return m


def _decode(data: bytes, commit_offset: int) -> Message:
    version = data[0]
    if version == FORMAT_V1:
        (_, pf, queue_id, flag, sys_flag, born, store, qoff, reconsume, lt, lg, lk, lh, lp) = _unpack_v1(data)
        o = _V1_SIZE
        topic = data[o : o + lt].decode()
        o += lt
        tags = data[o : o + lg].decode()
        o += lg
        keys = data[o : o + lk].decode()
        o += lk
        host = data[o : o + lh].decode()
        o += lh
        if not lp:
            props = {}
        elif pf == PROPS_NUL:
            parts = data[o : o + lp].decode().split("\x00")
            if len(parts) & 1:
                raise CorruptRecord(f"bad properties in record at {commit_offset}")
            it = iter(parts)
            props = dict(zip(it, it))
        elif pf == PROPS_CBOR:
            props = _loads(data[o : o + lp])
        else:
            raise CorruptRecord(f"unknown properties format {pf} at {commit_offset}")
        o += lp
        if o > len(data):
            raise CorruptRecord(f"truncated record at {commit_offset}")
        return Message(topic, data[o:], queue_id, tags, keys, props, flag, sys_flag, born, host, store,
                       reconsume, qoff, commit_offset)
    if version == FORMAT_V2:
        (topic, queue_id, body, tags, keys, props, flag, sys_flag, born, host, store, reconsume,
         qoff) = _loads(data[1:])
        return Message(topic, body, queue_id, tags, keys, props, flag, sys_flag, born, host, store,
                       reconsume, qoff, commit_offset)
    raise CorruptRecord(f"unknown record format {version} at {commit_offset}")


def record_meta(data: bytes | memoryview) -> tuple[int, int]:
    """``(store_timestamp, body_size)`` of a record without decoding strings or properties."""
    if data[0] == FORMAT_V1:
        f = _unpack_v1(data)
        return f[6], len(data) - _V1_SIZE - f[9] - f[10] - f[11] - f[12] - f[13]
    m = decode_message(data, -1)
    return m.store_timestamp, len(m.body)


# -- table values ------------------------------------------------------------------------------
# Table values are whatever the core keeps (dicts, lists, ints, strings, bytes): one version byte,
# then cbor2. Version 2 also carries the entry's full key, for keys too long to be an LMDB key
# (the store then keys the entry by a truncated key and a digest).

_VALUE_V1 = 1
_VALUE_V2 = 2


def encode_value(value: Any, long_key: bytes | None = None) -> bytes:
    if long_key is None:
        return b"\x01" + _dumps(value)
    return b"\x02" + _dumps([long_key, value])


def decode_entry(data: bytes | memoryview) -> tuple[bytes | None, Any]:
    """``(full key or None, value)`` of a stored table value."""
    data = bytes(data)
    version = data[:1]
    try:
        if version == b"\x01":
            return None, _loads(data[1:])
        if version == b"\x02":
            key, value = _loads(data[1:])
            if not isinstance(key, bytes):
                raise CorruptRecord("bad long table key")
            return key, value
    except (ValueError, TypeError, cbor2.CBORError) as exc:
        raise CorruptRecord(f"bad table value: {exc}") from exc
    raise CorruptRecord(f"unknown table value format {version!r}")


def decode_value(data: bytes | memoryview) -> Any:
    return decode_entry(data)[1]
