"""gRPC framing and the sans-IO HTTP/2 connection: unit and hypothesis fuzz tests."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rocketlite.protocols.grpc import codec
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.grpc.codec import (
    CallFailed,
    CallHalfClosed,
    CallMessage,
    CallStarted,
    ConnectionFailed,
    GrpcConnection,
    GrpcConnectionConfig,
    GrpcError,
    MessageReader,
    frame_message,
)
from rocketlite.protocols.grpc.service import decode


def test_frame_roundtrip_across_chunks() -> None:
    data = frame_message(b"abc") + frame_message(b"") + frame_message(b"x" * 1000)
    r = MessageReader()
    got = []
    for i in range(len(data)):
        got += r.feed(data[i : i + 1])
    assert got == [b"abc", b"", b"x" * 1000]
    assert r.pending == 0


def test_oversize_message_is_refused_before_buffering() -> None:
    r = MessageReader(max_message=10)
    with pytest.raises(GrpcError) as ei:
        r.feed(struct.pack(">BI", 0, 11))
    assert ei.value.status == codec.RESOURCE_EXHAUSTED


def test_compressed_message_needs_known_encoding() -> None:
    import gzip

    r = MessageReader(encoding="gzip")
    payload = gzip.compress(b"hello")
    assert r.feed(struct.pack(">BI", 1, len(payload)) + payload) == [b"hello"]
    with pytest.raises(GrpcError) as ei:
        MessageReader().feed(struct.pack(">BI", 1, 1) + b"x")
    assert ei.value.status == codec.UNIMPLEMENTED
    with pytest.raises(GrpcError):
        MessageReader().feed(struct.pack(">BI", 7, 0))


@pytest.mark.parametrize(
    "value, seconds",
    [("3S", 3.0), ("8760H", 8760 * 3600.0), ("2963m", 2.963), ("100u", 1e-4), ("5n", 5e-9), ("1M", 60.0)],
)
def test_parse_timeout(value: str, seconds: float) -> None:
    assert codec.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "S", "123456789S", "12x", "-1S", "1.5S"])
def test_parse_timeout_rejects_malformed(value: str | None) -> None:
    assert codec.parse_timeout(value) is None


def test_grpc_message_percent_encoding_roundtrip() -> None:
    text = "bad 100% ünïcode\nline"
    enc = codec.encode_grpc_message(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in enc) and "\n" not in enc
    assert codec.decode_grpc_message(enc) == text


@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_message_reader_never_crashes(data: bytes, chunk: int) -> None:
    r = MessageReader(max_message=512, encoding="gzip")
    try:
        for i in range(0, len(data), chunk):
            for m in r.feed(data[i : i + chunk]):
                assert len(m) <= 512
    except GrpcError as exc:
        assert exc.status in (codec.INTERNAL, codec.RESOURCE_EXHAUSTED, codec.UNIMPLEMENTED)


@given(st.binary(max_size=4096))
@settings(max_examples=300)
def test_fuzz_protobuf_decode_is_clean(data: bytes) -> None:
    for cls in (pb.SendMessageRequest, pb.TelemetryCommand, pb.ReceiveMessageRequest, pb.AckMessageRequest):
        try:
            decode(cls, data)
        except GrpcError as exc:
            assert exc.status == codec.INTERNAL


# ---- the HTTP/2 connection ----------------------------------------------------------------


def client() -> h2.connection.H2Connection:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    return c


def request_headers(path: str = "/apache.rocketmq.v2.MessagingService/QueryRoute") -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "3S"),
        ("x-mq-client-id", "cid"),
    ]


def pump(c: h2.connection.H2Connection, s: GrpcConnection) -> tuple[list[object], list[object]]:
    """Exchange bytes until quiet; returns (server events, client events)."""
    sev: list[object] = []
    cev: list[object] = []
    for _ in range(10):
        a = c.data_to_send()
        if a:
            sev += s.receive_data(a)
        b = s.data_to_send()
        if b:
            cev += c.receive_data(b)
        if not a and not b:
            break
    return sev, cev


def test_unary_call_events_and_reply() -> None:
    s = GrpcConnection()
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    c.send_data(1, frame_message(b"req"), end_stream=True)
    sev, _ = pump(c, s)
    sev = [e for e in sev if not isinstance(e, codec.WindowOpened)]
    kinds = [type(e) for e in sev]
    assert kinds == [CallStarted, CallMessage, CallHalfClosed]
    started = sev[0]
    assert isinstance(started, CallStarted)
    assert started.metadata["x-mq-client-id"] == "cid" and started.timeout == 3.0
    assert s.send_unary(1, b"resp")
    _, cev = pump(c, s)
    resp = [e for e in cev if isinstance(e, h2.events.ResponseReceived)]
    data = b"".join(e.data for e in cev if isinstance(e, h2.events.DataReceived))
    trailers = [e for e in cev if isinstance(e, h2.events.TrailersReceived)]
    assert resp and dict(resp[0].headers)[":status"] == "200"
    assert data == frame_message(b"resp")
    assert dict(trailers[0].headers)["grpc-status"] == "0"


def test_malformed_stream_resets_only_that_stream() -> None:
    s = GrpcConnection(GrpcConnectionConfig(max_message=100))
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    c.send_data(1, struct.pack(">BI", 0, 1000))  # too large: this stream fails
    c.send_headers(3, request_headers())
    c.send_data(3, frame_message(b"ok"), end_stream=True)
    sev, cev = pump(c, s)
    failed = [e for e in sev if isinstance(e, CallFailed)]
    assert [f.stream_id for f in failed] == [1] and failed[0].status == codec.RESOURCE_EXHAUSTED
    assert any(isinstance(e, CallHalfClosed) and e.stream_id == 3 for e in sev)
    # stream 1 got a trailers-only error (one HEADERS with END_STREAM) ...
    ended = [e for e in cev if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 1]
    assert ended and dict(ended[0].headers)["grpc-status"] == str(codec.RESOURCE_EXHAUSTED)
    # ... and stream 3 still works
    assert s.send_unary(3, b"fine")
    _, cev = pump(c, s)
    assert any(isinstance(e, h2.events.TrailersReceived) and e.stream_id == 3 for e in cev)


def test_non_grpc_request_fails_that_stream() -> None:
    s = GrpcConnection()
    s.initiate()
    c = client()
    hdrs = [(k, "text/plain" if k == "content-type" else v) for k, v in request_headers()]
    c.send_headers(1, hdrs, end_stream=True)
    sev, _ = pump(c, s)
    assert isinstance(sev[-1], CallFailed)


def test_bad_preface_fails_connection() -> None:
    s = GrpcConnection()
    s.initiate()
    with pytest.raises(ConnectionFailed):
        s.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.closed


def test_goaway_carries_last_stream_id() -> None:
    s = GrpcConnection()
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    pump(c, s)
    s.goaway()
    _, cev = pump(c, s)
    term = [e for e in cev if isinstance(e, h2.events.ConnectionTerminated)]
    assert term and term[0].last_stream_id == 1


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=12))
@settings(max_examples=200, deadline=None)
def test_fuzz_frames_after_a_valid_request(chunks: list[bytes]) -> None:
    """Random bytes after a valid preface: events or ConnectionFailed, never another exception."""
    s = GrpcConnection()
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    s.receive_data(c.data_to_send())
    for chunk in chunks:
        try:
            s.receive_data(chunk)
        except ConnectionFailed:
            return
        s.data_to_send()


@given(st.lists(st.binary(max_size=200), max_size=8))
@settings(max_examples=200, deadline=None)
def test_fuzz_grpc_data_on_a_stream(chunks: list[bytes]) -> None:
    """Arbitrary DATA payloads on one stream: only that stream can fail; a second stream still works."""
    s = GrpcConnection(GrpcConnectionConfig(max_message=256))
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    pump(c, s)
    for chunk in chunks:
        try:
            c.send_data(1, chunk)
        except Exception:
            break
        pump(c, s)
    c.send_headers(3, request_headers())
    c.send_data(3, frame_message(b"ok"), end_stream=True)
    sev, _ = pump(c, s)
    assert any(isinstance(e, CallMessage) and e.stream_id == 3 and e.payload == b"ok" for e in sev)


def test_peer_graceful_goaway_lets_open_streams_finish() -> None:
    s = GrpcConnection()
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    pump(c, s)
    c.close_connection()  # GOAWAY NO_ERROR, as grpc-js sends when a channel closes
    sev, _ = pump(c, s)
    assert any(isinstance(e, codec.ConnectionEnded) for e in sev) and not s.closed
    s.send_trailers(1, codec.OK)
    assert s.data_to_send()


def test_stream_bound_refuses_extra_streams() -> None:
    s = GrpcConnection(GrpcConnectionConfig(max_concurrent_streams=2))
    s.initiate()
    c = client()
    for sid in (1, 3, 5):
        c.send_headers(sid, request_headers())
    sev, cev = pump(c, s)
    assert [e.stream_id for e in sev if isinstance(e, CallStarted)] == [1, 3]
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == 5 and e.error_code == 7 for e in cev)


def test_ping_is_acked_and_windows_are_respected() -> None:
    s = GrpcConnection()
    s.initiate()
    c = client()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    c.send_headers(1, request_headers(), end_stream=True)
    c.ping(b"12345678")
    _, cev = pump(c, s)
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in cev)
    assert s.send_window(1) == 100
    assert not s.send_unary(1, b"x" * 200)  # does not fit: the caller must wait for credit
    s.send_headers(1)
    s.send_data(1, frame_message(b"x" * 95))
    assert s.send_window(1) == 0
    _, cev = pump(c, s)
    got = sum(len(e.data) for e in cev if isinstance(e, h2.events.DataReceived))
    assert got == 100
    c.increment_flow_control_window(1000, stream_id=1)
    sev, _ = pump(c, s)
    assert any(isinstance(e, codec.WindowOpened) and e.stream_id == 1 for e in sev)
    assert s.send_window(1) == 1000


def test_request_credit_returned_when_message_consumed() -> None:
    s = GrpcConnection(GrpcConnectionConfig(initial_window_size=65535))
    s.initiate()
    c = client()
    c.send_headers(1, request_headers())
    data = frame_message(b"a" * 60000)
    for i in range(0, len(data), 16000):
        c.send_data(1, data[i : i + 16000])
    sev, _ = pump(c, s)
    msg = [e for e in sev if isinstance(e, CallMessage)][0]
    # partial chunks were credited at once; the chunk that completed the message waits for the handler
    assert msg.flow_bytes == len(data) - 48000
    assert c.local_flow_control_window(1) == 65535 - msg.flow_bytes
    s.ack(1, msg.flow_bytes)
    pump(c, s)
    assert c.local_flow_control_window(1) == 65535
