"""Durability: with flush=sync, every acknowledged append survives a SIGKILL of the writer."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from rocketlite.core.message import Message
from rocketlite.storage.base import WriteBatch
from rocketlite.storage.lmdb_store import LmdbStore

WRITER = r"""
import sys, trio
from rocketlite.core.message import Message
from rocketlite.storage.base import WriteBatch
from rocketlite.storage.lmdb_store import LmdbStore

async def main(path):
    store = LmdbStore(path, flush="sync")
    await store.open()

    async def writer(n):
        i = 0
        while True:
            body = f"{n}:{i}".encode()
            msgs = [Message(topic="D", body=body, queue_id=n % 3, store_timestamp=1)]
            res = await store.write(WriteBatch(msgs, puts=[("acks", body, i)]))
            sys.stdout.write(f"{res[0].commit_offset} {res[0].queue_offset} {n % 3} {body.decode()}\n")
            sys.stdout.flush()
            i += 1

    async with trio.open_nursery() as nursery:
        for n in range(16):
            nursery.start_soon(writer, n)

trio.run(main, sys.argv[1])
"""


NL = b"\n"


def run_writer_and_kill(data: Path, wanted: int, timeout: float = 60.0) -> list[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while buf.count(b"\n") < wanted:
            left = deadline - time.monotonic()
            assert left > 0, f"writer acknowledged only {buf.count(NL)} appends"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"writer exited early with {proc.wait()}"
                buf += chunk
        os.kill(proc.pid, signal.SIGKILL)
        # lines already in the pipe were printed after their acknowledgement: they count too
        buf += proc.stdout.read()
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    text = buf.decode()
    return text[: text.rfind("\n")].splitlines()  # a torn last line was not fully acknowledged


async def test_sigkill_after_sync_acks_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lines = run_writer_and_kill(data, wanted=400)
    acked = [line.split() for line in lines]
    assert len(acked) >= 400
    store = LmdbStore(data, flush="sync")
    await store.open()
    try:
        offsets = [int(c) for c, _, _, _ in acked]
        assert len(set(offsets)) == len(offsets)
        msgs = await store.read_messages(offsets)
        for (c, q, qid, body), m in zip(acked, msgs):
            assert m is not None, f"acknowledged append at {c} is gone"
            assert (m.body.decode(), m.queue_offset, m.queue_id) == (body, int(q), int(qid))
        # the log is dense: nothing but whole groups, no holes
        assert store.commit_log_max() >= max(offsets) + 1
        everything = await store.read_messages(range(store.commit_log_max()))
        assert all(m is not None for m in everything)
        for qid in range(3):
            got = await store.read_queue("D", qid, 0, 100_000)
            assert [m.queue_offset for m in got] == list(range(store.max_offset("D", qid)))
        # table puts of the same batches survived with them
        for _, _, _, body in acked[:50]:
            assert await store.get("acks", body.encode()) == int(body.split(":")[1])
        # and the store keeps appending where it stopped
        res = await store.write(WriteBatch([Message(topic="D", body=b"after", queue_id=0)]))
        assert res[0].commit_offset == len(everything)
    finally:
        await store.close()
