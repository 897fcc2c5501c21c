"""Offset resets over remoting in process: INVOKE_BROKER_TO_RESET_OFFSET (222), the 220 push to
Java-speaking consumers, and the pending reset that moves clients which ignore 220
(rocketlite/protocols/remoting/reset.py)."""

from __future__ import annotations

import json
import re

import trio
import trio.testing

from rocketlite.protocols.remoting.codec import RemotingCommand
from rocketlite.protocols.remoting.reset import encode_reset_body, encode_reset_body_c
from tests.unit.test_remoting_server import serve


def table(body: bytes) -> dict[int, int]:
    """queueId -> offset of a fastjson ResetOffsetBody (object keys)."""
    text = body.decode()
    return {int(q): int(o) for q, o in re.findall(r'"queueId":(\d+),"topic":"[^"]*"\}:(-?\d+)', text)}


def test_body_layouts() -> None:
    java = encode_reset_body("b1", "T", {1: 7, 0: 3})
    assert java == (b'{"offsetTable":{{"brokerName":"b1","queueId":0,"topic":"T"}:3,'
                    b'{"brokerName":"b1","queueId":1,"topic":"T"}:7}}')
    c = json.loads(encode_reset_body_c("b1", "T", {0: 3}))
    assert c == {"offsetTable": [{"brokerName": "b1", "offset": 3, "queueId": 0, "topic": "T"}]}
    from rocketlite.admin.cli import _reset_table

    assert _reset_table(java) == {0: 3, 1: 7}


async def next_code(client, code: int) -> RemotingCommand:
    with trio.fail_after(5):
        while True:
            cmd = await client.incoming.receive()
            if cmd.code == code:
                return cmd


async def test_invoke_reset_notifies_java_clients_and_moves_others() -> None:
    async with serve() as srv, srv.client() as admin, srv.client() as java, srv.client(language="CPP") as cpp:
        b = srv.broker
        await b.create_topic("T", queues=2)
        for i in range(6):
            await admin.send_message("T", f"m{i}".encode(), queue_id=i % 2)
        # nobody online: CONSUMER_NOT_ONLINE, nothing changed (the admin tool commits itself)
        r = await admin.request(222, topic="T", group="G", timestamp=0, isForce="true")
        assert r.code == 206 and b.query_offset("G", "T", 0) is None
        r = await admin.request(222, topic="Nope", group="G", timestamp=0, isForce="true")
        assert r.code == 17
        await java.heartbeat("cid-java", consumer_group="G", subscriptions={"T": "*"})
        await cpp.heartbeat("cid-cpp", consumer_group="G", subscriptions={"T": "*"})
        for q in (0, 1):
            await b.commit_offset("G", "T", q, 3)
        # not forced and the time is ahead of the committed offsets: nothing moves forward
        r = await admin.request(222, topic="T", group="G", timestamp=b.now_ms() + 10_000, isForce="false")
        assert r.code == 0 and table(r.body) == {0: 3, 1: 3}
        r = await admin.request(222, topic="T", group="G", timestamp=0, isForce="true")
        assert r.code == 0 and table(r.body) == {0: 0, 1: 0}
        assert b.query_offset("G", "T", 0) == 0
        assert table((await next_code(java, 220)).body) == {0: 3, 1: 3}  # the unforced one: told anyway
        note = await next_code(java, 220)
        assert note.is_oneway and note.ext["topic"] == "T" and note.ext["group"] == "G"
        assert table(note.body) == {0: 0, 1: 0}
        # the C++ client gets no 220; its running consumer commits its old position: ignored
        await cpp.request(15, consumerGroup="G", topic="T", queueId=0, commitOffset=3)
        assert b.query_offset("G", "T", 0) == 0
        # ... and its next pull at the old position is told where to continue, once
        pull = {"consumerGroup": "G", "topic": "T", "queueId": 0, "queueOffset": 3, "maxMsgNums": 32, "sysFlag": 1,
                "commitOffset": 3, "suspendTimeoutMillis": 0, "subVersion": 0}
        r = await cpp.request(11, pull)
        assert r.code == 21 and r.ext["nextBeginOffset"] == "0"
        assert b.query_offset("G", "T", 0) == 0  # the piggy-backed commit was not applied
        r = await cpp.request(11, {**pull, "queueOffset": 0, "sysFlag": 0})
        assert r.code == 0 and r.remark == "FOUND"
        # taken: later commits count again; queue 1's pull at the target passes straight through
        await cpp.request(15, consumerGroup="G", topic="T", queueId=0, commitOffset=3)
        assert b.query_offset("G", "T", 0) == 3
        r = await java.request(11, {**pull, "queueId": 1, "queueOffset": 0, "sysFlag": 0})
        assert r.code == 0
        assert b.resets.pending("G", "T", 1) is None
        # 5.x: one queue to an explicit offset; out of range is refused
        r = await admin.request(222, topic="T", group="G", queueId=1, offset=2, timestamp=-1, isForce="true")
        assert r.code == 0 and table(r.body) == {1: 2}
        r = await admin.request(222, topic="T", group="G", queueId=1, offset=99, timestamp=-1, isForce="true")
        assert r.code == 1


async def test_parked_pull_comes_back_moved() -> None:
    """A consumer's long poll parked at its old position returns at once with the new offset."""
    async with serve() as srv, srv.client() as admin, srv.client() as consumer:
        b = srv.broker
        await b.create_topic("T", queues=1)
        for i in range(3):
            await admin.send_message("T", f"m{i}".encode(), queue_id=0)
        await consumer.heartbeat("cid-c", consumer_group="G", subscriptions={"T": "*"})
        pull = {"consumerGroup": "G", "topic": "T", "queueId": 0, "queueOffset": 3, "maxMsgNums": 32, "sysFlag": 2,
                "commitOffset": 0, "suspendTimeoutMillis": 15_000, "subVersion": 0}
        got: list[RemotingCommand] = []

        async def parked() -> None:
            got.append(await consumer.request(11, pull))

        with trio.fail_after(5):
            async with trio.open_nursery() as n:
                n.start_soon(parked)
                await trio.sleep(0.3)
                r = await admin.request(222, topic="T", group="G", timestamp=0, isForce="true")
                assert r.code == 0
        assert got[0].code == 21 and got[0].ext["nextBeginOffset"] == "0"


# -- the reset handler and the wrapped handlers answer whatever they are sent --------------------

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from([222, 11, 15, 34]),
    ext=st.dictionaries(st.sampled_from(["topic", "group", "consumerGroup", "queueId", "queueOffset", "timestamp",
                                         "isForce", "offset", "sysFlag", "commitOffset", "maxMsgNums"]),
                        st.one_of(st.sampled_from(["T", "G", "true", "-1", "0", "1", "2", "x", ""]),
                                  st.text(max_size=6)), max_size=8),
    pending=st.booleans(),
)
def test_fuzz_reset_handlers_always_answer(code: int, ext: dict[str, str], pending: bool) -> None:
    from rocketlite.core.broker import Broker, ClientInfo
    from rocketlite.core.filters import Subscription
    from rocketlite.core.message import Message
    from rocketlite.protocols.remoting.handlers import Advertised, RemotingService
    from rocketlite.runtime import TrioRuntime
    from rocketlite.storage.memory import MemoryStore
    from tests.unit.test_remoting_server import _FakeSession

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            broker = Broker(MemoryStore(), TrioRuntime(nursery))
            await broker.start()
            svc = RemotingService(broker, Advertised("127.0.0.1", 10911))
            await broker.create_topic("T", queues=2)
            await broker.send([Message("T", b"x", queue_id=0), Message("T", b"y", queue_id=0)])
            broker.register_consumer(ClientInfo("c", "G", protocol="remoting", session=_FakeSession(),
                                                subscriptions={"T": Subscription.make("T", "*")}))
            if pending:
                await broker.reset_offsets("G", "T", {0: 1, 1: 0})
            body = b'{"clientID":"c","consumerDataSet":[]}' if code == 34 else b""
            resp = await svc.handle(_FakeSession(), RemotingCommand(code=code, opaque=1, ext=ext, body=body))
            assert resp is None or resp.is_response
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
