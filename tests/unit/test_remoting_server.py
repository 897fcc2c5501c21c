"""The remoting front-end in process: real loopback sockets, our own Trio client, memory store."""

from __future__ import annotations

import json
import socket
import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from rocketlite.config import Settings
from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.frontends import FrontEndContext
from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.protocols.remoting.codec import (
    SERIALIZE_ROCKETMQ,
    BatchItem,
    RemotingCommand,
    decode_properties,
    decode_records,
    encode_batch,
    encode_command,
    encode_properties,
    parse_offset_msg_id,
)
from rocketlite.protocols.remoting.server import RemotingFrontEnd
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


@dataclass
class Srv:
    broker: Broker
    fe: RemotingFrontEnd
    host: str
    port: int

    @property
    def broker_port(self) -> int:
        return self.fe.ports["broker"]

    def client(self, port: int | None = None, **kw: Any) -> Any:
        return RemotingClient.connect(self.host, port or self.port, **kw)


@asynccontextmanager
async def serve(*, ports: tuple[int, int] = (0, 0), **settings: Any) -> AsyncIterator[Srv]:
    store = MemoryStore()
    await store.open()
    async with trio.open_nursery() as nursery:
        broker = Broker(store, TrioRuntime(nursery), BrokerSettings(**settings))
        await broker.start()
        for svc in broker.services:
            nursery.start_soon(svc)
        s = Settings()
        s.set("server", "host", "127.0.0.1")
        s.set("remoting", "port", ports[0])
        s.set("remoting", "broker_port", ports[1])
        fe = RemotingFrontEnd()
        started = await nursery.start(fe.serve, FrontEndContext(broker=broker, settings=s))
        host, port = started["remoting"]
        yield Srv(broker, fe, host, port)
        nursery.cancel_scope.cancel()


async def test_three_ports_and_routes() -> None:
    async with serve() as srv:
        assert srv.fe.ports["vip"] == srv.broker_port - 2
        for port in (srv.port, srv.broker_port, srv.fe.ports["vip"]):
            async with srv.client(port, version=401) as c:
                r = await c.request(105, topic="AnyTopic")
                assert r.code == 0 and r.is_response
                route = json.loads(r.body)
                assert route["brokerDatas"][0]["brokerAddrs"] == {"0": f"127.0.0.1:{srv.broker_port}"}
                assert route["queueDatas"][0]["writeQueueNums"] == 4
        async with srv.client(version=121) as c:  # old clients get fastjson's unquoted integer keys
            r = await c.request(105, topic="TBW102")
            assert b'"brokerAddrs":{0:"' in r.body
            r = await c.request(105, topic="%RETRY%G1")
            assert b'"readQueueNums":1' in r.body
            r = await c.request(105, topic="bad topic!")
            assert r.code == 17
            r = await c.request(106)
            assert r.code == 0 and b"brokerAddrTable" in r.body


async def test_routes_follow_update_broker_config() -> None:
    async with serve() as srv, srv.client() as c:
        r = await c.request(25, body=b"brokerIP1=10.1.2.3\nlistenPort=30911\n")
        assert r.code == 0
        route = json.loads((await c.request(105, topic="T")).body)
        assert route["brokerDatas"][0]["brokerAddrs"]["0"] == "10.1.2.3:30911"
        r = await c.request(26)
        assert b"brokerIP1=10.1.2.3" in r.body
        sent = await c.send_message("T", b"x")
        assert parse_offset_msg_id(sent.ext["msgId"])[:2] == ("10.1.2.3", 30911)


async def test_send_v1_v2_pull_view_query() -> None:
    async with serve() as srv, srv.client() as c:
        r1 = await c.send_message("T", b"one", tags="TagA", keys="k1 k2", queue_id=0)
        r2 = await c.send_message("T", b"two", tags="TagB", queue_id=0, v2=False)
        assert r1.code == r2.code == 0
        assert r1.ext["queueOffset"] == "0" and r2.ext["queueOffset"] == "1"
        assert set(r1.ext) >= {"msgId", "queueId", "queueOffset", "transactionId", "MSG_REGION", "TRACE_ON"}
        pull = dict(consumerGroup="G", topic="T", queueId=0, queueOffset=0, maxMsgNums=32, sysFlag=4,
                    commitOffset=0, suspendTimeoutMillis=0, subVersion=0)
        r = await c.request(11, pull, subscription="TagA || TagB")
        assert r.code == 0 and r.remark == "FOUND"
        recs = decode_records(r.body)
        assert [x.body for x in recs] == [b"one", b"two"]
        assert recs[0].properties["TAGS"] == "TagA" and recs[0].properties["KEYS"] == "k1 k2"
        assert recs[0].store_host == f"127.0.0.1:{srv.broker_port}"
        assert recs[0].msg_id == r1.ext["msgId"]
        assert r.ext["nextBeginOffset"] == "2" and r.ext["maxOffset"] == "2"
        r = await c.request(11, pull, subscription="TagB")
        assert [x.body for x in decode_records(r.body)] == [b"two"]
        r = await c.request(11, {**pull, "queueOffset": 2})
        assert r.code == 19  # PULL_NOT_FOUND at the end (no suspend)
        r = await c.request(11, {**pull, "queueOffset": 9})
        assert r.code == 21 and r.ext["nextBeginOffset"] == "2"
        r = await c.request(11, pull, subscription="TagZ")
        assert r.code == 20  # nothing matched: retry immediately from nextBeginOffset
        _, _, off = parse_offset_msg_id(r1.ext["msgId"])
        v = await c.request(33, offset=off)
        assert decode_records(v.body)[0].body == b"one"
        assert (await c.request(33, offset=10**6)).code == 1
        q = await c.request(12, topic="T", key="k2", maxNum=5, beginTimestamp=0, endTimestamp=2**60)
        assert [x.body for x in decode_records(q.body)] == [b"one"]
        assert (await c.request(12, topic="T", key="nope", maxNum=5, beginTimestamp=0, endTimestamp=2**60)).code == 22
        assert (await c.request(30, topic="T", queueId=0)).ext["offset"] == "2"
        assert (await c.request(31, topic="T", queueId=0)).ext["offset"] == "0"
        assert (await c.request(29, topic="T", queueId=0, timestamp=0)).ext["offset"] == "0"


async def test_large_frames_both_ways_beside_small_ones() -> None:
    """Frames far beyond a socket buffer cross the direct socket reads and writes whole (partial
    sends, waits for writability) while small requests on other connections go on."""
    big = [bytes([65 + i]) * (3 * 1024 * 1024 + i) for i in range(3)]
    async with serve() as srv, srv.client() as c, srv.client() as other:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):  # small buffers: partial sends on both sides
            c.raw.setsockopt(socket.SOL_SOCKET, opt, 256 * 1024)
        async with trio.open_nursery() as n:
            async def send(i: int) -> None:
                r = await c.send_message("Big", big[i], queue_id=2)
                assert r.code == 0
            for i in range(3):
                n.start_soon(send, i)
            for _ in range(20):
                assert (await other.request(105, topic="Big")).code == 0
        pull = dict(consumerGroup="G", topic="Big", queueId=2, maxMsgNums=32, sysFlag=4, subscription="*")
        bodies: list[bytes] = []
        offset = 0
        while len(bodies) < 3:  # 8 MiB per PULL body: two responses
            r = await c.request(11, pull, queueOffset=offset)
            assert r.code == 0
            bodies += [x.body for x in decode_records(r.body)]
            offset = int(r.ext["nextBeginOffset"])
        assert sorted(bodies) == big


async def test_batch_and_compressed_sends() -> None:
    async with serve() as srv, srv.client() as c:
        body = encode_batch([BatchItem(b"a", 0, {"UNIQ_KEY": "U1"}), BatchItem(b"b", 0, {"UNIQ_KEY": "U2"})])
        ext = {"a": "PG", "b": "B", "c": "TBW102", "d": 4, "e": 0, "f": 0, "g": 0, "h": 0, "i": "", "m": True}
        r = await c.request(320, ext, body)
        assert r.code == 0 and len(r.ext["msgId"].split(",")) == 2
        # C++ clients flag batches with "1": accepted too
        r = await c.request(10, {"producerGroup": "PG", "topic": "B", "defaultTopic": "TBW102",
                                 "defaultTopicQueueNums": 4, "queueId": 0, "sysFlag": 0, "bornTimestamp": 0,
                                 "flag": 0, "batch": "1"}, encode_batch([BatchItem(b"c")]))
        assert r.code == 0
        big = b"z" * 10000
        r = await c.send_message("B", zlib.compress(big), queue_id=0, sys_flag=1)
        assert r.code == 0
        msgs = (await srv.broker.pull("B", 0, 0, 10)).messages
        assert [m.body for m in msgs] == [b"a", b"b", b"c", big]
        assert msgs[3].sys_flag & 1 == 0
        assert [m.unique_id for m in msgs[:2]] == ["U1", "U2"]
        r = await c.request(320, ext, b"garbage")
        assert r.code == 13


async def test_long_poll_does_not_block_the_connection() -> None:
    async with serve() as srv, srv.client() as c, srv.client() as producer:
        pull = dict(consumerGroup="G", topic="LP", queueId=0, queueOffset=0, maxMsgNums=32, sysFlag=6,
                    commitOffset=0, suspendTimeoutMillis=10_000, subVersion=0, subscription="*")
        result: list[RemotingCommand] = []

        async def parked() -> None:
            result.append(await c.request(11, pull))

        async with trio.open_nursery() as n:
            n.start_soon(parked)
            with trio.fail_after(2):  # other requests on the same connection still answer
                r = await c.request(30, topic="LP", queueId=0)
                assert r.code == 0
            assert not result
            await producer.send_message("LP", b"wake", queue_id=0)
        assert result[0].code == 0
        assert decode_records(result[0].body)[0].body == b"wake"


async def test_unknown_code_oneway_and_binary() -> None:
    async with serve() as srv, srv.client() as c:
        r = await c.request(99999)
        assert r.code == 3 and "99999" in (r.remark or "")
        await c.oneway(15, consumerGroup="G", topic="T", queueId=0, commitOffset=7)
        r = await c.request(14, consumerGroup="G", topic="T", queueId=0)
        assert r.ext["offset"] == "7"
        with trio.move_on_after(0.2):
            extra = await c.incoming.receive()
            raise AssertionError(f"unexpected frame {extra}")
        r = await c.request(35, clientID="x")  # UNREGISTER without groups
        assert r.code == 0
        r = await c.request(11, consumerGroup="G")  # missing required fields
        assert r.code == 1 and "null" in (r.remark or "")
    async with serve() as srv, srv.client(serialize=SERIALIZE_ROCKETMQ) as c:
        r = await c.request(105, topic="T")
        assert r.code == 0 and r.serialize == SERIALIZE_ROCKETMQ and json.loads(r.body)["queueDatas"]


async def test_pipelined_requests_keep_their_order_where_it_matters() -> None:
    """Frames that arrive in one read still take effect in order: sends to one queue are stored in
    arrival order, and an offset update is visible to the query right behind it."""
    async with serve() as srv, srv.client() as c:
        for i in range(1, 30):
            await c.oneway(15, consumerGroup="G", topic="T", queueId=0, commitOffset=i)
            r = await c.request(14, consumerGroup="G", topic="T", queueId=0)
            assert r.ext["offset"] == str(i)
        got: list[RemotingCommand] = []
        async with trio.open_nursery() as n:
            async def send(k: int) -> None:
                got.append(await c.send_message("Ordered", str(k).encode(), queue_id=1))
            for k in range(50):
                n.start_soon(send, k)
        assert all(r.code == 0 for r in got)
        r = await c.request(11, consumerGroup="G", topic="Ordered", queueId=1, queueOffset=0, maxMsgNums=64,
                            sysFlag=4, subscription="*")
        bodies = [rec.body for rec in decode_records(r.body)]
        offsets = {int(x.ext["queueOffset"]): x for x in got}
        assert len(bodies) == 50 and sorted(offsets) == list(range(50))


async def test_malformed_frames_close_only_that_connection() -> None:
    async with serve() as srv:
        for junk in (b"\x7f\xff\xff\xff", b"\x00\x00\x00\x06\x00\x00\x00\x09{}",
                     b"\x00\x00\x00\x08\x00\x00\x00\x04nope", b"\x00\x00\x00\x06\x05\x00\x00\x02{}"):
            s = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await s.connect((srv.host, srv.port))
            await s.send(junk)
            with trio.fail_after(3):
                assert await s.recv(100) == b""  # closed by the server
            s.close()
        async with srv.client() as c:
            assert (await c.request(105, topic="T")).code == 0


async def test_consumer_offsets() -> None:
    async with serve() as srv, srv.client() as c:
        r = await c.request(14, consumerGroup="New", topic="Fresh", queueId=0)
        assert (r.code, r.ext.get("offset")) == (0, "0")  # young queue: start at 0
        r = await c.request(14, consumerGroup="New", topic="Fresh", queueId=0, setZeroIfNotFound=False)
        assert r.code == 22
        await c.request(15, consumerGroup="G", topic="T", queueId=1, commitOffset=5)
        await c.request(15, consumerGroup="G", topic="T", queueId=1, commitOffset=-1)  # ali-ons: ignored
        assert (await c.request(14, consumerGroup="G", topic="T", queueId=1)).ext["offset"] == "5"


async def test_heartbeat_consumer_list_notify_and_close() -> None:
    async with serve() as srv, srv.client() as a, srv.client() as b:
        assert (await a.request(38, consumerGroup="CG")).code == 1
        await a.heartbeat("cid-a", consumer_group="CG", subscriptions={"T": "TagA"})
        assert "%RETRY%CG" in srv.broker.topics
        r = await a.request(38, consumerGroup="CG")
        assert json.loads(r.body) == {"consumerIdList": ["cid-a"]}
        await b.heartbeat("cid-b", consumer_group="CG", subscriptions={"T": "TagA"})
        with trio.fail_after(2):
            note = await a.incoming.receive()
        assert note.code == 40 and note.is_oneway and note.ext == {"consumerGroup": "CG"}
        r = await a.request(38, consumerGroup="CG")
        assert json.loads(r.body)["consumerIdList"] == ["cid-a", "cid-b"]
        # the push consumer's pull without a subscription uses the heartbeat's
        await a.send_message("T", b"no", tags="TagB", queue_id=0)
        pull = dict(consumerGroup="CG", topic="T", queueId=0, queueOffset=0, maxMsgNums=32, sysFlag=0,
                    commitOffset=0, suspendTimeoutMillis=0, subVersion=0)
        assert (await a.request(11, pull)).code == 20
        assert (await a.request(11, {**pull, "consumerGroup": "Nobody"})).code == 24
    # connections closed: both consumers gone
    assert srv.broker.consumers_of("CG") == []


async def test_orderly_locks() -> None:
    async with serve() as srv, srv.client() as c:
        def body(cid: str) -> bytes:
            return json.dumps({"consumerGroup": "OG", "clientId": cid,
                               "mqSet": [{"topic": "T", "brokerName": "x", "queueId": 0},
                                         {"topic": "T", "brokerName": "x", "queueId": 1}]}).encode()
        r = await c.request(41, body=body("a"))
        assert len(json.loads(r.body)["lockOKMQSet"]) == 2
        r = await c.request(41, body=body("b"))
        assert json.loads(r.body)["lockOKMQSet"] == []
        assert (await c.request(42, body=body("a"))).code == 0
        r = await c.request(41, body=body("b") + b"\n")
        assert len(json.loads(r.body)["lockOKMQSet"]) == 2


async def test_send_back_dlq_and_retry_topic_overflow() -> None:
    async with serve() as srv, srv.client() as c:
        r = await c.send_message("RT", b"bad", queue_id=0)
        _, _, off = parse_offset_msg_id(r.ext["msgId"])
        r = await c.request(36, offset=off, group="RG", delayLevel=-1, originMsgId=r.ext["msgId"], originTopic="RT",
                            maxReconsumeTimes=16)
        assert r.code == 0
        assert srv.broker.max_offset("%DLQ%RG", 0) == 1
        assert (await c.request(36, offset=10**6, group="RG", delayLevel=0)).code == 1
        # a client's own fallback send to %RETRY% beyond the maximum goes to the DLQ
        ext = {"a": "PG", "b": "%RETRY%RG", "c": "TBW102", "d": 4, "e": 0, "f": 0, "g": 0, "h": 0, "i": "",
               "j": 17, "l": 16}
        assert (await c.request(310, ext, b"again")).code == 0
        assert srv.broker.max_offset("%DLQ%RG", 0) == 2


@pytest.mark.parametrize("heartbeat", [True, False])
async def test_transactions_end_and_check_back(heartbeat: bool) -> None:
    async with serve(transaction_timeout_ms=200, transaction_check_interval_ms=200) as srv, srv.client() as c:
        if heartbeat:  # without one, the half SEND's connection is the producer to ask
            await c.heartbeat("tx-client", producer_group="TXG")

        async def half(body: bytes) -> RemotingCommand:
            r = await c.send_message("TXT", body, group="TXG", queue_id=0, sys_flag=4,
                                     properties={"TRAN_MSG": "true", "PGROUP": "TXG"})
            assert r.code == 0
            return r

        def end(r: RemotingCommand, kind: int, uniq: str = "") -> dict[str, Any]:
            _, _, off = parse_offset_msg_id(r.ext["msgId"])
            return {"producerGroup": "TXG", "tranStateTableOffset": r.ext["queueOffset"], "commitLogOffset": off,
                    "commitOrRollback": kind, "fromTransactionCheck": False, "msgId": uniq,
                    "transactionId": r.ext["transactionId"]}

        a = await half(b"commit")
        b = await half(b"rollback")
        assert srv.broker.max_offset("TXT", 0) == 0  # halves are invisible
        assert (await c.request(37, end(a, 8))).code == 0
        assert (await c.request(37, end(b, 12))).code == 0
        assert (await c.request(37, end(b, 12))).code == 1  # already resolved
        msgs = (await srv.broker.pull("TXT", 0, 0, 10)).messages
        assert [m.body for m in msgs] == [b"commit"]
        u = await half(b"unknown")
        assert (await c.request(37, end(u, 0))).code == 0
        with trio.fail_after(5):
            check = await c.incoming.receive()
        assert check.code == 39 and check.is_oneway
        (rec,) = decode_records(check.body)
        assert rec.body == b"unknown" and rec.topic == "TXT"
        assert check.ext["commitLogOffset"] == str(parse_offset_msg_id(u.ext["msgId"])[2])
        await c.oneway(37, {**end(u, 8), "fromTransactionCheck": True, "msgId": check.ext["msgId"]})
        with trio.fail_after(5):
            while srv.broker.max_offset("TXT", 0) < 2:
                await trio.sleep(0.01)
        msgs = (await srv.broker.pull("TXT", 0, 0, 10)).messages
        assert [m.body for m in msgs] == [b"commit", b"unknown"]


async def test_pop_ack_and_change_invisible() -> None:
    async with serve() as srv, srv.client() as c:
        for i in range(3):
            await c.send_message("PT", f"p{i}".encode(), queue_id=0)
        pop = dict(consumerGroup="PG", topic="PT", queueId=-1, maxMsgNums=2, invisibleTime=60_000, pollTime=0,
                   bornTime=0, initMode=0)
        r = await c.request(200050, pop)
        assert r.code == 0 and r.ext["startOffsetInfo"]
        recs = decode_records(r.body)
        assert [x.body for x in recs] == [b"p0", b"p1"]
        ck0 = recs[0].properties["POP_CK"]
        assert len(ck0.split(" ")) == 8
        ack = dict(consumerGroup="PG", topic="PT", queueId=recs[0].queue_id, offset=recs[0].queue_offset, extraInfo=ck0)
        assert (await c.request(200051, ack)).code == 0
        assert (await c.request(200051, ack)).code != 0  # acked already
        # change the second's invisible time to 0: visible again now; ack with a Java-style rebuilt extraInfo
        ck1 = recs[1].properties["POP_CK"].split(" ")
        chg = dict(consumerGroup="PG", topic="PT", queueId=recs[1].queue_id, offset=recs[1].queue_offset,
                   extraInfo=" ".join(ck1), invisibleTime=0)
        r = await c.request(200053, chg)
        assert r.code == 0
        r = await c.request(200050, {**pop, "maxMsgNums": 5})
        assert sorted(x.body for x in decode_records(r.body)) == [b"p1", b"p2"]
        r = await c.request(200050, {**pop, "pollTime": 100})
        assert r.code == 210


def test_no_trio_in_codec_and_handlers() -> None:
    import ast
    from pathlib import Path

    import rocketlite.protocols.remoting as pkg

    for name in ("codec.py", "handlers.py"):
        tree = ast.parse((Path(pkg.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("trio", "lmdb") for a in node.names)
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in ("trio", "lmdb")


def test_frame_bytes_helper_sanity() -> None:
    raw = encode_command(RemotingCommand(code=105, opaque=1, ext={"topic": "T"}))
    assert raw[4] == 0 and decode_properties(encode_properties({"a": "b"})) == {"a": "b"}


async def test_consumer_running_info_is_forwarded_to_the_client() -> None:
    async with serve() as srv, srv.client() as consumer, srv.client() as admin:
        await consumer.heartbeat("cid-r", consumer_group="RG", subscriptions={"T": "*"})
        result: list[RemotingCommand] = []

        async def ask() -> None:
            result.append(await admin.request(307, consumerGroup="RG", clientId="cid-r", jstackEnable=False))

        async with trio.open_nursery() as n:
            n.start_soon(ask)
            with trio.fail_after(5):
                fwd = await consumer.incoming.receive()
                while fwd.code == 40:  # its own join's consumer-ids-changed comes first
                    fwd = await consumer.incoming.receive()
            assert fwd.code == 307 and not fwd.is_oneway
            await consumer.send(fwd.response(body=b'{"properties":{}}'))
        assert result[0].code == 0 and result[0].body == b'{"properties":{}}'
        r = await admin.request(307, consumerGroup="RG", clientId="nobody")
        assert r.code == 206


# -- every handler survives arbitrary fields and bodies -------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rocketlite.protocols.remoting.handlers import Advertised, RemotingService  # noqa: E402

_FIELD_NAMES = ["topic", "queueId", "consumerGroup", "queueOffset", "maxMsgNums", "sysFlag", "commitOffset",
                "suspendTimeoutMillis", "subscription", "expressionType", "offset", "group", "delayLevel",
                "commitOrRollback", "commitLogOffset", "producerGroup", "clientID", "key", "maxNum",
                "extraInfo", "invisibleTime", "pollTime", "a", "b", "e", "f", "i", "m", "timestamp", "clientId"]


class _FakeSession:
    peer = "127.0.0.1:1"

    def __init__(self) -> None:
        from rocketlite.protocols.remoting.handlers import ConnState

        self.state = ConnState()

    def send_soon(self, cmd: RemotingCommand) -> None:
        pass

    async def request(self, cmd: RemotingCommand, timeout_ms: float) -> None:
        return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from([10, 11, 12, 14, 15, 17, 25, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 41, 42, 46, 105, 200,
                          307, 310, 320, 200050, 200051, 200053, 7]),
    ext=st.dictionaries(st.sampled_from(_FIELD_NAMES),
                        st.one_of(st.text(max_size=12), st.integers(-5, 40).map(str)), max_size=8),
    body=st.one_of(st.binary(max_size=64), st.sampled_from([b"[]", b"{}", b'{"mqSet":[{}]}', b'{"clientID":1}',
                                                            b'{"consumerDataSet":[{"groupName":"g"}]}', b"null"])),
)
def test_fuzz_handlers_always_answer(code: int, ext: dict[str, str], body: bytes) -> None:
    async def main() -> None:
        store = MemoryStore()
        await store.open()
        async with trio.open_nursery() as nursery:
            broker = Broker(store, TrioRuntime(nursery))
            await broker.start()
            svc = RemotingService(broker, Advertised("127.0.0.1", 10911))
            resp = await svc.handle(_FakeSession(), RemotingCommand(code=code, opaque=1, ext=ext, body=body))
            assert resp is None or resp.is_response
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_nameserver_and_broker_roles_can_share_one_port() -> None:
    with socket.socket() as probe:  # a free port, then the same number for both roles
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with serve(ports=(port, port)) as srv, srv.client(port) as c:
        assert srv.port == srv.broker_port == port
        route = json.loads((await c.request(105, topic="T")).body)
        assert route["brokerDatas"][0]["brokerAddrs"]["0"] == f"127.0.0.1:{port}"
        assert (await c.send_message("T", b"x")).code == 0


async def test_pipelined_sends_to_one_queue_keep_their_order() -> None:
    async with serve() as srv, srv.client() as c:
        cmds = [c.command(310, {"a": "PG", "b": "ORD", "c": "TBW102", "d": 4, "e": 1, "f": 0, "g": 0, "h": 0, "i": ""},
                          f"{i}".encode()) for i in range(50)]
        waits = {cmd.opaque: (trio.Event(), []) for cmd in cmds}
        c._waiting.update(waits)
        await c.stream.send_all(b"".join(encode_command(cmd) for cmd in cmds))  # one write, 50 requests
        with trio.fail_after(10):
            for ev, _ in waits.values():
                await ev.wait()
        assert all(slot[0].code == 0 for _, slot in waits.values())
        msgs = (await srv.broker.pull("ORD", 1, 0, 100)).messages
        assert [m.body for m in msgs] == [f"{i}".encode() for i in range(50)]


async def test_sends_piled_up_on_one_queue_are_stored_together_but_answered_one_by_one() -> None:
    """Sends queued behind each other for one queue share one broker.send; when the broker refuses
    the group (one message too large), each request still gets its own answer, in order."""
    async with serve(max_message_size=1000) as srv, srv.client() as c:
        bodies = [b"a", b"b", b"x" * 2000, b"c", b"d"]
        cmds = [c.command(310, {"a": "PG", "b": "GRP", "e": 2, "f": 0, "g": 0, "h": 0, "i": "TAGS\x01t\x02"}, body)
                for body in bodies]
        waits = {cmd.opaque: (trio.Event(), []) for cmd in cmds}
        c._waiting.update(waits)
        await c.stream.send_all(b"".join(encode_command(cmd) for cmd in cmds))
        with trio.fail_after(10):
            for ev, _ in waits.values():
                await ev.wait()
        codes = [waits[cmd.opaque][1][0].code for cmd in cmds]
        assert codes == [0, 0, 13, 0, 0]
        offsets = [waits[cmd.opaque][1][0].ext.get("queueOffset") for cmd in cmds]
        assert offsets == ["0", "1", None, "2", "3"]
        msgs = (await srv.broker.pull("GRP", 2, 0, 100)).messages
        assert [m.body for m in msgs] == [b"a", b"b", b"c", b"d"]
        assert all(m.tags == "t" for m in msgs)
