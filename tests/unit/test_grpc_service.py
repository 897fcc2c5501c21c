"""MessagingService on the core (memory store), called in process through grpcio."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import trio

from rocketlite.config import Settings
from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.frontends import FrontEndContext
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.grpc.server import GrpcFrontEnd
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore

SVC = "/apache.rocketmq.v2.MessagingService/"
META = (("x-mq-client-id", "svc-test@1@0@x"),)


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[tuple[int, Broker, trio.CancelScope]]:
    settings = Settings()
    settings.set("server", "host", "127.0.0.1")
    settings.set("grpc", "port", 0)
    broker = Broker(MemoryStore(), TrioRuntime(nursery), BrokerSettings())
    await broker.start()
    for service in broker.services:
        nursery.start_soon(service)
    scope = trio.CancelScope()

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await GrpcFrontEnd().serve(FrontEndContext(broker=broker, settings=settings), task_status=task_status)

    _, port = await nursery.start(serve)
    yield port, broker, scope


def stub(ch: grpc.Channel, method: str, resp_cls: Any) -> Callable[..., Any]:
    fn = ch.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                        response_deserializer=resp_cls.FromString)
    return lambda req, **kw: fn(req, timeout=10, metadata=META, **kw)


def receive(ch: grpc.Channel, group: str, topic: str, invisible_s: int = 30, poll_s: int = 1) -> list[Any]:
    fn = ch.unary_stream(SVC + "ReceiveMessage", request_serializer=lambda m: m.SerializeToString(),
                         response_deserializer=pb.ReceiveMessageResponse.FromString)
    req = pb.ReceiveMessageRequest(batch_size=32)
    req.group.name = group
    req.message_queue.topic.name = topic
    req.filter_expression.type = pb.TAG
    req.filter_expression.expression = "*"
    req.invisible_duration.seconds = invisible_s
    req.long_polling_timeout.seconds = poll_s
    return list(fn(req, timeout=10, metadata=META))


def send(ch: grpc.Channel, topic: str, body: bytes, mid: str, **sp: Any) -> Any:
    req = pb.SendMessageRequest()
    m = req.messages.add(body=body)
    m.topic.name = topic
    m.system_properties.message_id = mid
    m.user_properties["k"] = "v"
    for k, v in sp.items():
        setattr(m.system_properties, k, v)
    return stub(ch, "SendMessage", pb.SendMessageResponse)(req)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def test_receive_ack_change_invisible(server: tuple[int, Broker, trio.CancelScope]) -> None:
    port = server[0]

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert send(ch, "svcA", b"one", "ID1", tag="t1").status.code == pb.OK
            stream = receive(ch, "gA", "svcA")
            out["shape"] = [r.WhichOneof("content") for r in stream]
            msg = stream[1].message
            out["msg"] = msg
            ack = stub(ch, "AckMessage", pb.AckMessageResponse)
            cid = stub(ch, "ChangeInvisibleDuration", pb.ChangeInvisibleDurationResponse)
            req = pb.ChangeInvisibleDurationRequest(receipt_handle=msg.system_properties.receipt_handle,
                                                    message_id="ID1")
            req.group.name, req.topic.name = "gA", "svcA"
            req.invisible_duration.seconds = 10
            changed = cid(req)
            out["changed"] = changed.status.code
            areq = pb.AckMessageRequest()
            areq.group.name, areq.topic.name = "gA", "svcA"
            areq.entries.add(message_id="ID1", receipt_handle=msg.system_properties.receipt_handle)
            out["old_ack"] = ack(areq).status.code
            areq.entries[0].receipt_handle = changed.receipt_handle
            out["new_ack"] = ack(areq).status.code
            out["empty"] = receive(ch, "gA", "svcA", poll_s=0)[0].status.code
        return out

    out = await in_thread(run)
    assert out["shape"] == ["status", "message", "delivery_timestamp"]
    sp = out["msg"].system_properties
    assert sp.message_id == "ID1" and sp.tag == "t1" and sp.delivery_attempt == 1
    assert sp.body_digest.type == pb.MD5 and len(sp.body_digest.checksum) == 32
    assert dict(out["msg"].user_properties) == {"k": "v"}
    assert out["changed"] == pb.OK
    assert out["old_ack"] == pb.INVALID_RECEIPT_HANDLE
    assert out["new_ack"] == pb.OK
    assert out["empty"] == pb.MESSAGE_NOT_FOUND


async def test_transactions_recall_and_assignment(server: tuple[int, Broker, trio.CancelScope]) -> None:
    port = server[0]

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            end = stub(ch, "EndTransaction", pb.EndTransactionResponse)
            r = send(ch, "svcTx", b"half", "TX1", message_type=pb.TRANSACTION)
            out["txid"] = r.entries[0].transaction_id
            out["hidden"] = receive(ch, "gTx", "svcTx", poll_s=0)[0].status.code
            req = pb.EndTransactionRequest(message_id="TX1", transaction_id=out["txid"], resolution=pb.COMMIT,
                                           source=pb.SOURCE_CLIENT)
            req.topic.name = "svcTx"
            out["commit"] = end(req).status.code
            out["again"] = end(req).status.code
            out["visible"] = [x.message.body for x in receive(ch, "gTx", "svcTx") if x.HasField("message")]
            d = send(ch, "svcDelay", b"later", "D1")
            out["no_handle"] = d.entries[0].recall_handle
            req2 = pb.SendMessageRequest()
            m = req2.messages.add(body=b"x")
            m.topic.name = "svcDelay"
            m.system_properties.message_id = "D2"
            m.system_properties.delivery_timestamp.seconds = 2_000_000_000
            out["too_far"] = stub(ch, "SendMessage", pb.SendMessageResponse)(req2).status.code
            qa = pb.QueryAssignmentRequest()
            qa.topic.name, qa.group.name = "svcTx", "gTx"
            qa.endpoints.addresses.add(host="127.0.0.1", port=port)
            out["assign"] = [a.message_queue.id for a in stub(ch, "QueryAssignment", pb.QueryAssignmentResponse)(qa).assignments]
            rc = pb.RecallMessageRequest(recall_handle="nope")
            rc.topic.name = "svcDelay"
            out["recall"] = stub(ch, "RecallMessage", pb.RecallMessageResponse)(rc).status.code
            hb = pb.HeartbeatRequest(client_type=pb.SIMPLE_CONSUMER)
            hb.group.name = "gTx"
            out["hb"] = stub(ch, "Heartbeat", pb.HeartbeatResponse)(hb).status.code
            out["bye"] = stub(ch, "NotifyClientTermination", pb.NotifyClientTerminationResponse)(
                pb.NotifyClientTerminationRequest()).status.code
        return out

    out = await in_thread(run)
    assert out["txid"] and out["hidden"] == pb.MESSAGE_NOT_FOUND
    assert out["commit"] == pb.OK and out["again"] == pb.INVALID_TRANSACTION_ID
    assert out["visible"] == [b"half"]
    assert out["no_handle"] == "" and out["too_far"] == pb.ILLEGAL_DELIVERY_TIME
    assert out["assign"] == [-1]
    assert out["recall"] == pb.NOT_FOUND
    assert out["hb"] == pb.OK and out["bye"] == pb.OK


async def test_telemetry_settings_reply(server: tuple[int, Broker, trio.CancelScope]) -> None:
    port = server[0]

    def run() -> list[Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            fn = ch.stream_stream(SVC + "Telemetry", request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=pb.TelemetryCommand.FromString)
            s = pb.Settings(client_type=pb.PRODUCER)
            s.publishing.topics.add(name="svcT")
            s.user_agent.language = pb.NODE_JS
            c = pb.Settings(client_type=pb.PUSH_CONSUMER)
            c.subscription.group.name = "gT"
            c.user_agent.language = pb.NODE_JS
            call = fn(iter([pb.TelemetryCommand(settings=s), pb.TelemetryCommand(settings=c)]), timeout=10,
                      metadata=META)
            return list(call)

    replies = await in_thread(run)
    assert [r.status.code for r in replies] == [pb.OK, pb.OK]
    prod, cons = replies[0].settings, replies[1].settings
    assert prod.publishing.max_body_size == 4 * 1024 * 1024
    assert prod.backoff_policy.WhichOneof("strategy") == "exponential_backoff"
    assert cons.subscription.receive_batch_size == 32 and cons.backoff_policy.max_attempts == 17
    assert cons.backoff_policy.WhichOneof("strategy") == "exponential_backoff"  # what Node understands


async def test_shutdown_sends_goaway(server: tuple[int, Broker, trio.CancelScope]) -> None:
    port, _, scope = server
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    await stream.send_all(c.data_to_send())
    c.receive_data(await stream.receive_some(65536))  # server SETTINGS
    scope.cancel()
    events: list[Any] = []
    with trio.fail_after(5):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            events += c.receive_data(data)
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 0 for e in events)
    await stream.aclose()


class FakeCall:
    """Just enough of server.Call for calling the service directly (no sockets)."""

    def __init__(self, client_id: str = "push@1") -> None:
        self.client_id = client_id
        self.peer = "127.0.0.1:1"
        self.timeout = None
        self.reset = False
        self.finished = False
        self.sent: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        self.sent.append(payload)


async def test_auto_renew_keeps_a_push_consumers_message_invisible(autojump_clock: Any) -> None:
    from rocketlite.core.message import Message
    from rocketlite.protocols.grpc.service import GrpcClient, MessagingService

    async with trio.open_nursery() as nursery:
        broker = Broker(MemoryStore(), TrioRuntime(nursery), BrokerSettings())
        await broker.start()
        for service in broker.services:
            nursery.start_soon(service)
        svc = MessagingService(broker, Settings())
        await nursery.start(svc.run)
        call = FakeCall()
        svc.clients["push@1"] = GrpcClient("push@1", telemetry=call)  # type: ignore[arg-type]
        await broker.send([Message("renewT", b"slow")])
        req = pb.ReceiveMessageRequest(batch_size=32, auto_renew=True)
        req.group.name = "gR"
        req.message_queue.topic.name = "renewT"
        req.message_queue.id = -1
        req.long_polling_timeout.seconds = 1
        await svc.receive_message(req, call)  # type: ignore[arg-type]
        handle = pb.ReceiveMessageResponse.FromString(call.sent[1]).message.system_properties.receipt_handle
        await trio.sleep(150)  # well past the 60 s invisibility: renewed twice meanwhile
        other = FakeCall("other@1")
        await svc.receive_message(req, other)  # type: ignore[arg-type]
        assert pb.ReceiveMessageResponse.FromString(other.sent[0]).status.code == pb.MESSAGE_NOT_FOUND
        ack = pb.AckMessageRequest()
        ack.group.name, ack.topic.name = "gR", "renewT"
        ack.entries.add(receipt_handle=handle)  # the first handle still works
        assert (await svc.ack_message(ack, call)).status.code == pb.OK  # type: ignore[arg-type]
        assert not svc.renewals
        nursery.cancel_scope.cancel()


async def test_front_end_offers_self_signed_tls_without_configuration(
    server: tuple[int, Broker, trio.CancelScope],
) -> None:
    import ssl

    port = server[0]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=ctx)
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "h2"
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert (await stream.receive_some(4096))[3] == 0x04  # SETTINGS
    await stream.aclose()
