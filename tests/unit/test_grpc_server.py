"""The gRPC front-end in process, driven by grpcio (C-core) as the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable

import grpc
import pytest
import trio

from rocketlite.config import Settings
from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.frontends import FrontEndContext
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.grpc.server import Call, GrpcFrontEnd, GrpcServer
from rocketlite.protocols.grpc.tls import self_signed_pem
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore

SVC = "/apache.rocketmq.v2.MessagingService/"
META = (("x-mq-client-id", "test@1@0@abc"), ("x-mq-language", "PYTHON"))


@pytest.fixture
async def grpc_port(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[tuple[int, bytes]]:
    cert, key = self_signed_pem()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    settings = Settings()
    settings.set("server", "host", "127.0.0.1")
    settings.set("grpc", "port", 0)
    settings.set("grpc", "tls_cert_file", str(tmp_path / "c.pem"))
    settings.set("grpc", "tls_key_file", str(tmp_path / "k.pem"))
    broker = Broker(MemoryStore(), TrioRuntime(nursery), BrokerSettings())
    await broker.start()
    for service in broker.services:
        nursery.start_soon(service)
    ctx = FrontEndContext(broker=broker, settings=settings)
    _, port = await nursery.start(GrpcFrontEnd().serve, ctx)
    yield port, cert


def unary(channel: grpc.Channel, method: str, req: Any, resp_cls: Any, timeout: float = 5) -> Any:
    fn = channel.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=resp_cls.FromString)
    return fn(req, timeout=timeout, metadata=META)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


def route_request(topic: str, port: int) -> pb.QueryRouteRequest:
    req = pb.QueryRouteRequest()
    req.topic.name = topic
    req.endpoints.scheme = pb.IPv4
    req.endpoints.addresses.add(host="127.0.0.1", port=port)
    return req


async def test_query_route_plaintext_and_tls_on_one_port(grpc_port: tuple[int, bytes]) -> None:
    port, cert = grpc_port

    def run() -> tuple[Any, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            plain = unary(ch, "QueryRoute", route_request("t1", port), pb.QueryRouteResponse)
        creds = grpc.ssl_channel_credentials(root_certificates=cert)
        with grpc.secure_channel(f"localhost:{port}", creds) as ch:
            tls = unary(ch, "QueryRoute", route_request("t1", port), pb.QueryRouteResponse)
        return plain, tls

    plain, tls = await in_thread(run)
    for resp in (plain, tls):
        assert resp.status.code == pb.OK
        assert [q.id for q in resp.message_queues] == [0, 1, 2, 3]
        q = resp.message_queues[0]
        assert q.broker.id == 0 and q.broker.endpoints.addresses[0].port == port
        assert q.permission == pb.READ_WRITE and pb.FIFO in q.accept_message_types


async def test_send_message_and_business_errors(grpc_port: tuple[int, bytes]) -> None:
    port, _ = grpc_port

    def run() -> tuple[Any, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            req = pb.SendMessageRequest()
            m = req.messages.add(body=b"hello")
            m.topic.name = "t2"
            m.system_properties.message_id = "01ABC"
            m.system_properties.tag = "a"
            ok = unary(ch, "SendMessage", req, pb.SendMessageResponse)
            m.body = b""
            empty = unary(ch, "SendMessage", req, pb.SendMessageResponse)
        return ok, empty

    ok, empty = await in_thread(run)
    assert ok.status.code == pb.OK and ok.entries[0].message_id == "01ABC"
    assert empty.status.code == pb.MESSAGE_BODY_EMPTY


async def test_unknown_method_and_garbage_request_fail_only_that_call(grpc_port: tuple[int, bytes]) -> None:
    port, _ = grpc_port

    def run() -> list[Any]:
        out = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            raw = ch.unary_unary(SVC + "Nope")
            try:
                raw(b"", timeout=5)
            except grpc.RpcError as exc:
                out.append(exc.code())
            raw = ch.unary_unary(SVC + "QueryRoute")
            try:
                raw(b"\xff\xff\xff", timeout=5)
            except grpc.RpcError as exc:
                out.append(exc.code())
            out.append(unary(ch, "QueryRoute", route_request("t3", port), pb.QueryRouteResponse).status.code)
        return out

    assert await in_thread(run) == [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, pb.OK]


async def test_deadline_and_concurrent_calls(nursery: trio.Nursery) -> None:
    async def slow(call: Call) -> None:
        await call.recv_one()
        await trio.sleep_forever()

    async def echo(call: Call) -> None:
        await call.reply(await call.recv_one())

    server = GrpcServer({"/x/Slow": slow, "/x/Echo": echo})
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.handle, listeners)

    def run() -> tuple[Any, list[bytes]]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                ch.unary_unary("/x/Slow")(b"a", timeout=0.3)
                code = None
            except grpc.RpcError as exc:
                code = exc.code()
            futs = [ch.unary_unary("/x/Echo").future(b"x" * i * 1000, timeout=10) for i in range(40)]
            return code, [f.result() for f in futs]

    code, results = await in_thread(run)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert results == [b"x" * i * 1000 for i in range(40)]


async def test_large_messages_respect_flow_control(nursery: trio.Nursery) -> None:
    async def echo(call: Call) -> None:
        data = await call.recv_one()
        for _ in range(3):
            await call.send(data)

    server = GrpcServer({"/x/Big": echo})
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.handle, listeners)
    big = bytes(range(256)) * 24 * 1024  # 6 MiB: beyond every initial window

    def run() -> list[bytes]:
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
            return list(ch.unary_stream("/x/Big")(big, timeout=30))

    assert await in_thread(run) == [big, big, big]


async def test_self_signed_tls_made_on_first_tls_connection(nursery: trio.Nursery) -> None:
    import ssl

    from rocketlite.protocols.grpc.tls import server_ssl_context

    server = GrpcServer({}, ssl_context_factory=server_ssl_context)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.handle, listeners)
    assert server.ssl_context is None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=ctx)
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "h2"
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    data = await stream.receive_some(4096)
    assert data[3] == 0x04  # the server's SETTINGS frame
    await stream.aclose()
    assert server.ssl_context is not None


async def test_idle_connection_is_closed_with_goaway(nursery: trio.Nursery, autojump_clock: Any) -> None:
    import h2.config
    import h2.connection
    import h2.events

    server = GrpcServer({}, idle_timeout=120.0)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, server.handle, listeners)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    await stream.send_all(c.data_to_send())
    t0 = trio.current_time()
    events: list[Any] = []
    while True:
        data = await stream.receive_some(65536)
        if not data:
            break
        events += c.receive_data(data)
        out = c.data_to_send()
        if out:
            await stream.send_all(out)
    assert trio.current_time() - t0 >= 120.0
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    await stream.aclose()
