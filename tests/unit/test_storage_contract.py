"""One contract, every store: MemoryStore and LmdbStore (sync and async flush)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import AsyncIterator

import pytest
import trio

from rocketlite.core.errors import StorageFull
from rocketlite.core.message import PROP_UNIQ_KEY, Message, tag_hash
from rocketlite.storage.base import Store, WriteBatch
from rocketlite.storage.lmdb_store import LmdbStore
from rocketlite.storage.memory import MemoryStore

KINDS = ["memory", "lmdb-sync", "lmdb-async"]


def make_store(kind: str, path: Path, **kw: object) -> Store:
    if kind == "memory":
        return MemoryStore()
    return LmdbStore(path / "data", flush=kind.split("-")[1], flush_interval_ms=50, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = make_store(kind, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def msg(topic: str = "T", qid: int = 0, body: bytes = b"x", *, ts: int = 1000, tags: str = "", keys: str = "",
        uniq: str = "", props: dict[str, str] | None = None) -> Message:
    p = dict(props or {})
    if uniq:
        p[PROP_UNIQ_KEY] = uniq
    return Message(topic=topic, body=body, queue_id=qid, tags=tags, keys=keys, properties=p,
                   store_timestamp=ts, born_timestamp=ts - 1, born_host="127.0.0.1:1234")


async def append(store: Store, *msgs: Message, puts=(), deletes=()) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    res = await store.write(WriteBatch(messages=list(msgs), puts=list(puts), deletes=list(deletes)))
    return [(r.commit_offset, r.queue_offset) for r in res]


async def test_batch_append_assigns_commit_and_queue_offsets(store: Store) -> None:
    assert store.commit_log_max() == 0
    a, b, c = msg("A", 0), msg("A", 1), msg("A", 0)
    assert await append(store, a, b, c) == [(0, 0), (1, 0), (2, 1)]
    assert (a.commit_offset, a.queue_offset, c.commit_offset, c.queue_offset) == (0, 0, 2, 1)
    assert await append(store, msg("B", 3), msg("A", 0)) == [(3, 0), (4, 2)]
    assert store.commit_log_max() == 5
    assert sorted(store.queues()) == [("A", 0), ("A", 1), ("B", 3)]
    assert await append(store) == []  # empty batch


async def test_read_index_and_messages_by_range(store: Store) -> None:
    sent = [msg("T", 2, f"m{i}".encode(), ts=100 + i, tags="TagA" if i % 2 else "TagB", keys=f"k{i}",
                uniq=f"U{i}", props={"p": str(i)}) for i in range(10)]
    await append(store, *sent[:4])
    await append(store, msg("other", 0))
    await append(store, *sent[4:])
    idx = await store.read_index("T", 2, 3, 4)
    assert [e.queue_offset for e in idx] == [3, 4, 5, 6]
    assert [e.commit_offset for e in idx] == [3, 5, 6, 7]
    assert [e.tag_hash for e in idx] == [tag_hash("TagA"), tag_hash("TagB"), tag_hash("TagA"), tag_hash("TagB")]
    assert [e.size for e in idx] == [2, 2, 2, 2]
    assert [e.store_timestamp for e in idx] == [103, 104, 105, 106]
    assert [e.queue_offset for e in await store.read_index("T", 2, 8, 100)] == [8, 9]
    assert await store.read_index("T", 2, 10, 5) == []
    assert await store.read_index("T", 2, 0, 0) == []
    assert await store.read_index("nope", 0, 0, 5) == []
    got = await store.read_queue("T", 2, 0, 100)
    assert [m.body for m in got] == [m.body for m in sent]
    for g, s in zip(got, sent):
        assert (g.topic, g.queue_id, g.tags, g.keys, g.properties, g.store_timestamp, g.born_timestamp,
                g.born_host, g.queue_offset, g.commit_offset) == (
                s.topic, s.queue_id, s.tags, s.keys, s.properties, s.store_timestamp, s.born_timestamp,
                s.born_host, s.queue_offset, s.commit_offset)
    one = await store.read_messages([4, 0, 99])
    assert one[0] is not None and one[0].topic == "other"
    assert one[1] is not None and one[1].body == b"m0"
    assert one[2] is None
    # reads are copies: changing them changes nothing stored
    got[0].properties["p"] = "changed"
    (again,) = await store.read_messages([0])
    assert again is not None and again.properties["p"] == "0"


async def test_min_max_offsets(store: Store) -> None:
    assert (store.min_offset("T", 0), store.max_offset("T", 0)) == (0, 0)
    await append(store, *[msg("T", 0) for _ in range(5)])
    assert (store.min_offset("T", 0), store.max_offset("T", 0)) == (0, 5)
    assert (store.min_offset("T", 1), store.max_offset("T", 1)) == (0, 0)


async def test_offset_for_timestamp(store: Store) -> None:
    await append(store, *[msg("T", 0, ts=t) for t in (10, 20, 20, 30, 40)])
    assert await store.offset_for_timestamp("T", 0, 0) == 0
    assert await store.offset_for_timestamp("T", 0, 10) == 0
    assert await store.offset_for_timestamp("T", 0, 15) == 1
    assert await store.offset_for_timestamp("T", 0, 20) == 1
    assert await store.offset_for_timestamp("T", 0, 31) == 4
    assert await store.offset_for_timestamp("T", 0, 41) == 5
    assert await store.offset_for_timestamp("none", 0, 41) == 0


async def test_lookup_by_key_and_unique_id(store: Store) -> None:
    await append(store, msg(keys="order-1 shared", uniq="AAA"), msg(keys="order-2 shared", uniq="BBB"))
    await append(store, msg(keys="shared", uniq="CCC"))
    long_key = "L" * 1000
    await append(store, msg(keys=long_key, uniq="DDD"))
    assert await store.lookup_key("order-1") == [0]
    assert await store.lookup_key("BBB") == [1]
    assert await store.lookup_key("shared") == [0, 1, 2]
    assert await store.lookup_key("shared", max_count=2) == [1, 2]
    assert await store.lookup_key(long_key) == [3]
    assert await store.lookup_key("order") == []
    assert await store.lookup_key("missing") == []


async def test_tables_put_get_scan_delete_atomic_with_appends(store: Store) -> None:
    value = {"offset": 7, "list": [1, "a", b"b"], "nested": {"x": None}}
    await append(store, msg(), puts=[("offsets", b"g1|T|0", value), ("offsets", b"g1|T|1", 3), ("topics", b"T", "cfg")])
    assert await store.get("offsets", b"g1|T|0") == value
    assert await store.get("offsets", b"missing") is None
    assert await store.get("nope", b"g1|T|0") is None
    await append(store, puts=[("offsets", b"g2|T|0", 1), ("offsets", b"g1|T|1", 4)], deletes=[("topics", b"T")])
    assert await store.scan("offsets") == [(b"g1|T|0", value), (b"g1|T|1", 4), (b"g2|T|0", 1)]
    assert await store.scan("offsets", b"g1|", b"g1|\xff") == [(b"g1|T|0", value), (b"g1|T|1", 4)]
    assert await store.scan("offsets", b"g1|T|1") == [(b"g1|T|1", 4), (b"g2|T|0", 1)]
    assert await store.scan("offsets", limit=1) == [(b"g1|T|0", value)]
    assert await store.scan("topics") == []
    assert await store.scan("off") == []  # a prefix of a table name is another table
    # values read back are copies
    got = await store.get("offsets", b"g1|T|0")
    got["offset"] = 99
    assert (await store.get("offsets", b"g1|T|0"))["offset"] == 7
    await append(store, deletes=[("offsets", b"g1|T|0"), ("offsets", b"never-there")])
    assert [k for k, _ in await store.scan("offsets")] == [b"g1|T|1", b"g2|T|0"]


async def test_retention_by_age_deletes_from_head(store: Store) -> None:
    await append(store, *[msg("A", 0, b"12345", ts=t) for t in (100, 200, 300)])
    await append(store, *[msg("B", 1, b"12345", ts=t, keys="k") for t in (150, 400)])
    # commit order: A0@100 A1@200 A2@300 B0@150 B1@400 -> the head stops at the first young one
    removed = await store.retain(max_age_ms=500, max_bytes=None, now_ms=750)  # older than 250
    assert removed == 2
    assert (store.min_offset("A", 0), store.max_offset("A", 0)) == (2, 3)
    assert (store.min_offset("B", 1), store.max_offset("B", 1)) == (0, 2)
    assert await store.read_messages([0, 1, 2]) == [None, None, await _one(store, 2)]
    assert [e.queue_offset for e in await store.read_index("A", 0, 0, 10)] == [2]
    # reading below the minimum is clamped
    assert [m.queue_offset for m in await store.read_queue("A", 0, 0, 10)] == [2]
    assert await store.retain(max_age_ms=None, max_bytes=None, now_ms=750) == 0
    assert await store.retain(max_age_ms=0, max_bytes=None, now_ms=10_000) == 3
    assert (store.min_offset("A", 0), store.max_offset("A", 0)) == (3, 3)
    assert (store.min_offset("B", 1), store.max_offset("B", 1)) == (2, 2)
    assert await store.lookup_key("k") == []
    # offsets stay dense after the queue emptied
    assert await append(store, msg("A", 0), msg("B", 1)) == [(5, 3), (6, 2)]
    assert await store.offset_for_timestamp("A", 0, 0) == 3


async def _one(store: Store, off: int) -> Message | None:
    return (await store.read_messages([off]))[0]


async def test_retention_by_size_keeps_newest(store: Store) -> None:
    await append(store, *[msg("A", 0, b"x" * 100, ts=i) for i in range(10)])
    removed = await store.retain(max_age_ms=None, max_bytes=350, now_ms=10)
    assert removed == 7
    assert store.min_offset("A", 0) == 7
    assert store.stats()["bytes"] == 300
    assert store.stats()["messages"] == 3


async def test_retention_while_writers_continue(store: Store) -> None:
    acked: list[int] = []

    async def writer(n: int) -> None:
        for i in range(60):
            res = await store.write(WriteBatch([msg("W", n % 2, b"y" * 50, ts=i)]))
            acked.append(res[0].commit_offset)

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(writer, n)
        for _ in range(10):
            await store.retain(max_age_ms=None, max_bytes=50 * 20, now_ms=0)
            await trio.sleep(0)
    await store.retain(max_age_ms=None, max_bytes=50 * 20, now_ms=0)
    assert sorted(acked) == list(range(240))
    assert store.stats()["messages"] == 20
    kept = 0
    for q in (0, 1):
        lo, hi = store.min_offset("W", q), store.max_offset("W", q)
        assert hi == 120
        got = await store.read_queue("W", q, 0, 1000)
        assert [m.queue_offset for m in got] == list(range(lo, hi))
        kept += len(got)
    assert kept == 20


async def test_clear_removes_everything(store: Store) -> None:
    await append(store, msg("A", 0, keys="k"), puts=[("t", b"k", 1)])
    await store.clear()
    assert store.commit_log_max() == 0
    assert list(store.queues()) == []
    assert store.max_offset("A", 0) == 0
    assert await store.scan("t") == []
    assert await store.lookup_key("k") == []
    assert await store.read_messages([0]) == [None]
    assert await append(store, msg("B", 0)) == [(0, 0)]


async def test_concurrent_writers_get_distinct_dense_offsets(store: Store) -> None:
    results: list[tuple[int, int, int]] = []

    async def writer(n: int) -> None:
        for i in range(20):
            batch = [msg("C", n % 4, f"{n}:{i}:{j}".encode()) for j in range(1 + (n + i) % 3)]
            for m, r in zip(batch, await store.write(WriteBatch(batch))):
                results.append((m.queue_id, r.queue_offset, r.commit_offset))
                assert (m.queue_offset, m.commit_offset) == (r.queue_offset, r.commit_offset)

    async with trio.open_nursery() as nursery:
        for n in range(64):
            nursery.start_soon(writer, n)
    commit = sorted(c for _, _, c in results)
    assert commit == list(range(len(results)))
    for q in range(4):
        offs = sorted(o for qid, o, _ in results if qid == q)
        assert offs == list(range(len(offs)))
        assert store.max_offset("C", q) == len(offs)
    # queue order follows commit order within each queue
    for q in range(4):
        by_commit = sorted((c, o) for qid, o, c in results if qid == q)
        assert [o for _, o in by_commit] == sorted(o for _, o in by_commit)
    for m in await store.read_queue("C", 0, 0, 10_000):
        n, i, j = m.body.decode().split(":")
        assert int(n) % 4 == 0


async def test_cancelled_writers_never_half_apply(store: Store) -> None:
    outcomes: list[tuple[list[Message], bool]] = []

    async def writer(n: int) -> None:
        batch = [msg("X", 0, f"{n}:{j}".encode()) for j in range(3)]
        done = False
        patient = n % 4 == 3
        with trio.move_on_after(60 if patient else random.choice([0, 0.0001, 0.001])):
            await store.write(WriteBatch(batch, puts=[("t", f"{n:03}".encode(), n)]))
            done = True
        outcomes.append((batch, done))
        if patient:  # cancelled neighbours never stall the others
            assert done

    async with trio.open_nursery() as nursery:
        for n in range(100):
            nursery.start_soon(writer, n)
    stored = {m.body: m.commit_offset for m in await store.read_queue("X", 0, 0, 10_000)}
    assert sorted(stored.values()) == list(range(len(stored)))
    table = dict(await store.scan("t"))
    for batch, done in outcomes:
        present = [m.body in stored for m in batch]
        assert all(present) or not any(present)
        # written <=> the caller got its result (a taken batch is waited for, not abandoned)
        assert done == all(present)
        if not done:
            assert all(m.commit_offset == -1 for m in batch)
        if all(present):
            assert [stored[m.body] for m in batch] == [m.commit_offset for m in batch]
            n = int(batch[0].body.split(b":")[0])
            assert table[f"{n:03}".encode()] == n


# -- LMDB only --------------------------------------------------------------------------------

lmdb_kinds = pytest.mark.parametrize("kind", ["lmdb-sync", "lmdb-async"])


@lmdb_kinds
async def test_reopen_keeps_everything(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    await s.open()
    await append(s, *[msg("A", q, f"{i}".encode(), ts=i, keys=f"k{i}", uniq=f"U{i}") for i in range(6) for q in (0, 1)],
                 puts=[("t", b"a", {"x": 1})])
    await append(s, msg("B", 0, b"b"))
    await s.retain(max_age_ms=None, max_bytes=5, now_ms=0)
    before = (s.commit_log_max(), sorted(s.queues()), [(s.min_offset(t, q), s.max_offset(t, q)) for t, q in sorted(s.queues())],
              s.stats()["bytes"], s.stats()["messages"])
    await s.close()
    s2 = make_store(kind, tmp_path)
    await s2.open()
    try:
        after = (s2.commit_log_max(), sorted(s2.queues()), [(s2.min_offset(t, q), s2.max_offset(t, q)) for t, q in sorted(s2.queues())],
                 s2.stats()["bytes"], s2.stats()["messages"])
        assert after == before
        assert await s2.get("t", b"a") == {"x": 1}
        assert [m.body for m in await s2.read_queue("A", 1, 0, 100)] == [b"4", b"5"]
        assert await s2.lookup_key("U5") == [10, 11]
        assert await append(s2, msg("A", 1), msg("C", 0)) == [(13, 6), (14, 0)]
    finally:
        await s2.close()


@lmdb_kinds
async def test_one_bad_batch_fails_alone(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    await s.open()
    errors: list[BaseException] = []
    try:
        async def good(n: int) -> None:
            await s.write(WriteBatch([msg("G", 0, b"%d" % n)], puts=[("t", b"%d" % n, n)]))

        async def bad() -> None:
            try:
                await s.write(WriteBatch([msg("G", 0, b"bad")], puts=[("t", b"bad", object())]))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(good, n)
                if n == 5:
                    nursery.start_soon(bad)
        assert len(errors) == 1
        bodies = sorted(m.body for m in await s.read_queue("G", 0, 0, 100))
        assert bodies == sorted(b"%d" % n for n in range(10))
        assert s.max_offset("G", 0) == 10
        assert await s.get("t", b"bad") is None
    finally:
        await s.close()


async def test_refuses_writes_below_free_disk_floor(tmp_path: Path) -> None:
    s = LmdbStore(tmp_path / "d", min_free_disk_mb=1 << 40)
    await s.open()
    try:
        with pytest.raises(StorageFull):
            await s.write(WriteBatch([msg()]))
        assert s.commit_log_max() == 0
    finally:
        await s.close()


async def test_record_codec_round_trip_and_fallback() -> None:
    from rocketlite.storage.records import CorruptRecord, decode_message, encode_message

    m = Message("T", b"\x00body", 3, "tag", "a b", {"k": "v", "ü": "é"}, 1, 2, 3, "h:1", 4, 5, 6, 7)
    big = m.copy(flag=1 << 40, topic="t" * 70_000)
    for x in (m, big, Message("t", b"")):
        rec = encode_message(x)
        assert rec[0] in (1, 2)
        y = decode_message(rec, x.commit_offset)
        assert y == x
    assert encode_message(big)[0] == 2
    with pytest.raises(CorruptRecord):
        decode_message(b"\x09abc", 0)
    with pytest.raises(CorruptRecord):
        decode_message(encode_message(m)[:20], 0)


def test_record_props_encodings_and_old_records_decode() -> None:
    import struct

    import cbor2

    from rocketlite.storage.records import PROPS_CBOR, PROPS_NUL, CorruptRecord, decode_message, encode_message

    m = Message("T", b"body", 3, "tag", "a b", {"UNIQ_KEY": "AB", "k": "", "": "v", "\u00fc": "\u00e9"},
                1, 2, 3, "h:1", 4, 5, 6, 7)
    rec = encode_message(m)
    assert rec[0] == 1 and rec[1] == PROPS_NUL
    assert decode_message(rec, 7) == m
    # a key or value holding the separator, or a value that is no string: cbor2, still round trips
    for props in ({"k": "a\x00b"}, {"k\x00": "v"}, {"k": "v", "\x00": ""}):
        x = m.copy(properties=props)
        rec = encode_message(x)
        assert rec[1] == PROPS_CBOR
        assert decode_message(rec, 7) == x
    odd = m.copy(properties={"n": 1})  # type: ignore[dict-item]
    assert encode_message(odd)[1] == PROPS_CBOR and decode_message(encode_message(odd), 7) == odd
    # a record as written before the props-format byte existed ("reserved", 0; cbor2 properties)
    props = cbor2.dumps({"UNIQ_KEY": "AB", "k": "v"})
    head = struct.pack("<BBiiiqqqiHHHHI", 1, 0, 3, 1, 2, 3, 4, 6, 5, 1, 3, 3, 3, len(props))
    old = head + b"T" + b"tag" + b"a b" + b"h:1" + props + b"body"
    assert decode_message(old, 7) == Message("T", b"body", 3, "tag", "a b", {"UNIQ_KEY": "AB", "k": "v"},
                                             1, 2, 3, "h:1", 4, 5, 6, 7)
    # an unknown props format, or an odd number of NUL-separated items, is a clear error
    bad = bytearray(encode_message(m))
    bad[1] = 9
    with pytest.raises(CorruptRecord):
        decode_message(bytes(bad), 7)
    props = b"a\x00b\x00c"
    head = struct.pack("<BBiiiqqqiHHHHI", 1, PROPS_NUL, 3, 1, 2, 3, 4, 6, 5, 1, 0, 0, 0, len(props))
    with pytest.raises(CorruptRecord):
        decode_message(head + b"T" + props, 7)


@lmdb_kinds
async def test_concurrent_single_and_mixed_batches_agree_after_reopen(kind: str, tmp_path: Path) -> None:
    """One-message batches take a fast path in _prepare/_remember; groups mix them with bigger
    batches, new topics and table puts. Everything must read back the same from the tail, from
    LMDB and after a reopen."""
    s = make_store(kind, tmp_path)
    assert isinstance(s, LmdbStore)
    await s.open()
    results: list[tuple[Message, int, int]] = []

    async def writer(n: int) -> None:
        rnd = random.Random(n)
        for i in range(15):
            if rnd.random() < 0.2:
                ms = [msg(f"M{n % 3}", j, b"b%d-%d-%d" % (n, i, j), keys=f"k{n} x{i}", uniq=f"U{n}-{i}-{j}")
                      for j in range(rnd.randrange(1, 4))]
                res = await s.write(WriteBatch(ms, puts=[("tt", b"%d-%d" % (n, i), {"n": n})]))
            else:
                ms = [msg(f"T{rnd.randrange(4)}", rnd.randrange(3), b"b%d-%d" % (n, i), tags=f"t{i % 3}",
                          keys=f"k{n}" if i % 2 else "", uniq=f"U{n}-{i}", props={"p": "v\x00w"} if i == 7 else None)]
                res = await s.write(WriteBatch(ms))
            for m, r in zip(ms, res):
                results.append((m, r.commit_offset, r.queue_offset))

    try:
        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(writer, n)
        assert sorted(c for _, c, _ in results) == list(range(len(results)))

        async def snapshot(store: LmdbStore) -> list[object]:
            out: list[object] = [await store.read_messages([c for _, c, _ in results])]
            for t in ("T0", "T1", "T2", "T3", "M0", "M1", "M2"):
                for q in range(3):
                    out.append(await store.read_index(t, q, 0, 1000))
                    out.append(await store.read_queue(t, q, 0, 1000))
            out.append(await store.lookup_key("k3"))
            out.append(await store.lookup_key("U5-7"))
            out.append(await store.scan("tt"))
            return out

        hot = await snapshot(s)
        for (m, c, q), got in zip(results, hot[0]):  # type: ignore[arg-type]
            assert got == m and got.commit_offset == c and got.queue_offset == q
        s._drop_tail()
        assert await snapshot(s) == hot
    finally:
        await s.close()
    s2 = make_store(kind, tmp_path)
    assert isinstance(s2, LmdbStore)
    await s2.open()
    try:
        assert await snapshot(s2) == hot
    finally:
        await s2.close()


@lmdb_kinds
async def test_hot_tail_and_lmdb_reads_agree(kind: str, tmp_path: Path) -> None:
    import rocketlite.storage.lmdb_store as mod

    s = make_store(kind, tmp_path)
    assert isinstance(s, LmdbStore)
    await s.open()
    try:
        rnd = random.Random(7)
        for i in range(60):
            await append(s, *[msg(f"T{rnd.randrange(3)}", rnd.randrange(2), b"%d" % (i * 10 + j), ts=i, tags=f"t{j}")
                              for j in range(rnd.randrange(1, 6))])
            if i == 40:
                await s.retain(max_age_ms=None, max_bytes=200, now_ms=0)

        async def snapshot() -> list[object]:
            out: list[object] = []
            for t in ("T0", "T1", "T2"):
                for q in (0, 1):
                    for start in (0, 3, 50, 10_000):
                        out.append(await s.read_index(t, q, start, 7))
                        out.append([(m.body, m.queue_offset) for m in await s.read_queue(t, q, start, 5)])
            out.append(await s.read_messages(list(range(0, s.commit_log_max(), 3))))
            return out

        hot = await snapshot()
        s._drop_tail()
        cold = await snapshot()
        assert hot == cold
        # a tiny tail: trimming keeps the answers right
        old = mod._TAIL_BYTES, mod._QTAIL
        mod._TAIL_BYTES, mod._QTAIL = 300, 4
        try:
            for i in range(30):
                await append(s, msg("T1", 1, b"late%d" % i, ts=100))
            trimmed = await snapshot()
            s._drop_tail()
            assert trimmed == await snapshot()
        finally:
            mod._TAIL_BYTES, mod._QTAIL = old
    finally:
        await s.close()


@lmdb_kinds
async def test_close_waits_for_reads_and_writes_in_flight(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    assert isinstance(s, LmdbStore)
    await s.open()
    await append(s, *[msg("T", 0, b"%d" % i) for i in range(200)])
    s._drop_tail()  # force reads through LMDB threads
    outcomes: list[str] = []

    async def reader() -> None:
        try:
            while True:
                got = await s.read_queue("T", 0, 0, 200)
                assert len(got) == 200
                await trio.sleep(0)
        except RuntimeError as exc:
            assert "closed" in str(exc)
            outcomes.append("closed")

    async def writer() -> None:
        try:
            while True:
                await append(s, msg("T", 1))
        except RuntimeError:
            outcomes.append("writer closed")

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(reader)
        nursery.start_soon(writer)
        await trio.sleep(0.05)
        await s.close()
    assert outcomes.count("closed") == 8 and "writer closed" in outcomes
    s2 = make_store(kind, tmp_path)
    await s2.open()
    try:
        assert s2.max_offset("T", 1) == s.max_offset("T", 1)
    finally:
        await s2.close()


# -- the record codec (pure) --------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_i32 = st.integers(-(2**31), 2**31 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_any_int = st.one_of(_i64, st.integers(-(2**70), 2**70))


@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(max_size=40), body=st.binary(max_size=300), queue_id=st.one_of(_i32, _any_int),
    tags=st.text(max_size=20), keys=st.text(max_size=30),
    props=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5),
    flag=_any_int, sys_flag=_i32, born=_i64, host=st.text(max_size=30), store=_any_int,
    reconsume=_i32, qoff=_i64,
)
def test_record_round_trips(topic: str, body: bytes, queue_id: int, tags: str, keys: str, props: dict[str, str],
                            flag: int, sys_flag: int, born: int, host: str, store: int, reconsume: int,
                            qoff: int) -> None:
    from rocketlite.storage.records import decode_message, encode_message

    m = Message(topic, body, queue_id, tags, keys, props, flag, sys_flag, born, host, store, reconsume, qoff, 5)
    assert decode_message(encode_message(m), 5) == m


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_record_decoder_rejects_garbage_cleanly(data: bytes) -> None:
    from rocketlite.storage.records import CorruptRecord, decode_message, decode_value

    for fn in (lambda: decode_message(data, 0), lambda: decode_value(data)):
        try:
            fn()
        except CorruptRecord:
            pass  # a clear error; never a crash or a hang


@lmdb_kinds
async def test_failed_group_leaves_no_holes(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    assert isinstance(s, LmdbStore)
    await s.open()
    real = s._commit_batches
    calls = [0]

    def flaky(ops):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:
            s._fail(ops, OSError("simulated LMDB failure"))
            return False
        return real(ops)

    s._commit_batches = flaky  # type: ignore[method-assign]
    ok: list[Message] = []
    failed: list[Message] = []

    async def writer(n: int) -> None:
        for i in range(5):
            m = msg("F", n % 2, b"%d:%d" % (n, i))
            try:
                await s.write(WriteBatch([m]))
                ok.append(m)
            except OSError:
                assert m.commit_offset == -1
                failed.append(m)

    try:
        async with trio.open_nursery() as nursery:
            for n in range(30):
                nursery.start_soon(writer, n)
        assert failed and ok
        stored = await s.read_messages(range(s.commit_log_max()))
        assert all(m is not None for m in stored)
        assert sorted(m.body for m in stored if m) == sorted(m.body for m in ok)
        for m in ok:
            assert stored[m.commit_offset].body == m.body  # type: ignore[union-attr]
        for q in (0, 1):
            got = await s.read_queue("F", q, 0, 1000)
            assert [m.queue_offset for m in got] == list(range(s.max_offset("F", q)))
    finally:
        await s.close()


async def test_one_process_per_data_directory(tmp_path: Path) -> None:
    a = LmdbStore(tmp_path / "d")
    await a.open()
    b = LmdbStore(tmp_path / "d")
    with pytest.raises(RuntimeError, match="in use"):
        await b.open()
    await a.close()
    await b.open()  # free again once the first one closed
    await b.close()


def test_bench_storage_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rocketlite bench storage` still runs (a benchmark, not a timed test: no figures checked)."""
    import json

    from rocketlite.bench import storage_main

    assert storage_main(["--duration", "0.05", "--sizes", "100", "--writers", "1,4", "--stores",
                         "lmdb-async,lmdb-sync,memory", "--broker", "--no-process", "--json", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["appends"]) == 6 + 3
    assert all(row["count"] > 0 for row in out["appends"])


async def test_tables_take_long_keys(store: Store) -> None:
    # e.g. MQTT retained messages keyed by a topic of up to 64 KiB
    a = b"a/" + b"x" * 70_000
    b1 = b"b/" + b"y" * 600 + b"1"
    b2 = b"b/" + b"y" * 600 + b"2"
    short = b"b/short"
    edge = b"c" * 480  # around LMDB's 511-byte key limit with the table prefix
    await append(store, puts=[("mqtt_retained", k, {"k": len(k)}) for k in (a, b1, b2, short, edge)])
    assert await store.get("mqtt_retained", a) == {"k": len(a)}
    assert await store.get("mqtt_retained", b2) == {"k": len(b2)}
    assert await store.get("mqtt_retained", b"b/" + b"y" * 600 + b"3") is None
    keys = [k for k, _ in await store.scan("mqtt_retained")]
    assert sorted(keys) == sorted([a, b1, b2, short, edge])
    assert keys[0] == a and keys[-1] == edge
    assert sorted(k for k, _ in await store.scan("mqtt_retained", b"b/", b"b0")) == sorted([b1, b2, short])
    assert [k for k, _ in await store.scan("mqtt_retained", b"b/short")] == [short, b1, b2, edge]
    assert [k for k, _ in await store.scan("mqtt_retained", b"b/t", limit=2)] == [b1, b2]
    assert [k for k, _ in await store.scan("mqtt_retained", b"a", b"b")] == [a]
    await append(store, deletes=[("mqtt_retained", a), ("mqtt_retained", b1)])
    assert await store.get("mqtt_retained", a) is None
    assert sorted(k for k, _ in await store.scan("mqtt_retained")) == sorted([b2, short, edge])


@lmdb_kinds
async def test_overlong_topic_fails_its_batch_only(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path)
    await s.open()
    try:
        with pytest.raises(ValueError):
            await append(s, msg("t" * 600))
        assert await append(s, msg("ok")) == [(0, 0)]
    finally:
        await s.close()
