"""``rocketlite bench grpc``: SendMessage calls/s and received messages/s, against a grpcio echo baseline.

    rocketlite bench grpc [--seconds 5] [--body 1024] [--inflight 1,16] [--target host:port]
    python benchmarks/grpc_bench.py ...        (the same)

Starts a real rocketlite process (ephemeral store) and, as the reference, a grpcio C-core server that
echoes the SendMessage request bytes back. The client is grpcio's asyncio API with N calls in flight.
Prints one line per measurement and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import os
import subprocess
import sys
import time
from typing import Any

from rocketlite.protocols.grpc import messaging_pb2 as pb

try:
    import grpc
except ImportError:  # pragma: no cover - grpcio is a test/bench dependency
    grpc = None  # type: ignore[assignment]

SVC = "/apache.rocketmq.v2.MessagingService/"
META = (("x-mq-client-id", "bench@1@0@x"), ("x-mq-language", "PYTHON"))

ECHO_SERVER = r"""
import sys, time
from concurrent import futures
import grpc
def echo(req, ctx):
    return req
handler = grpc.method_handlers_generic_handler("apache.rocketmq.v2.MessagingService", {
    "SendMessage": grpc.unary_unary_rpc_method_handler(echo),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""


def send_request(topic: str, body: bytes, i: int) -> bytes:
    req = pb.SendMessageRequest()
    m = req.messages.add(body=body)
    m.topic.name = topic
    m.system_properties.message_id = f"01BENCH{i:024X}"
    m.system_properties.tag = "bench"
    m.system_properties.message_type = pb.NORMAL
    return req.SerializeToString()


async def run_sends(target: str, inflight: int, seconds: float, body: bytes, topic: str) -> float:
    async with grpc.aio.insecure_channel(target) as ch:
        call = ch.unary_unary(SVC + "SendMessage")
        payloads = [send_request(topic, body, i) for i in range(64)]
        await call(payloads[0], metadata=META, timeout=10)
        count = 0
        end = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal count
            i = k
            while time.perf_counter() < end:
                await call(payloads[i % 64], metadata=META, timeout=10)
                count += 1
                i += inflight

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(inflight)))
        return count / (time.perf_counter() - t0)


async def run_receives(target: str, inflight: int, seconds: float, topic: str, group: str) -> float:
    async with grpc.aio.insecure_channel(target) as ch:
        receive = ch.unary_stream(SVC + "ReceiveMessage", response_deserializer=pb.ReceiveMessageResponse.FromString)
        ack = ch.unary_unary(SVC + "AckMessage", response_deserializer=pb.AckMessageResponse.FromString)
        count = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < end:
                req = pb.ReceiveMessageRequest(batch_size=32)
                req.group.name = group
                req.message_queue.topic.name = topic
                req.message_queue.id = -1
                req.filter_expression.type = pb.TAG
                req.filter_expression.expression = "*"
                req.invisible_duration.seconds = 30
                req.long_polling_timeout.seconds = 1
                a = pb.AckMessageRequest()
                a.group.name = group
                a.topic.name = topic
                async for r in receive(req.SerializeToString(), metadata=META, timeout=10):
                    if r.WhichOneof("content") == "message":
                        sp = r.message.system_properties
                        a.entries.add(message_id=sp.message_id, receipt_handle=sp.receipt_handle)
                if a.entries:
                    resp = await ack(a.SerializeToString(), metadata=META, timeout=10)
                    count += sum(1 for e in resp.entries if e.status.code == pb.OK)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return count / (time.perf_counter() - t0)


@contextlib.contextmanager
def rocketlite_server() -> Any:
    """A ``rocketlite serve --ephemeral`` subprocess on free ports; yields its gRPC host:port."""
    from rocketlite.bench import FREE_PORTS, spawn_serve, stop_serve

    proc, addresses, _ = spawn_serve([*FREE_PORTS, "--ephemeral"])
    try:
        yield addresses["grpc"]
    finally:
        stop_serve(proc)


def main(argv: list[str] | None = None) -> int:
    if grpc is None:
        print("the gRPC benchmark needs grpcio (pip install grpcio)", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(
        prog="rocketlite bench grpc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternate baseline and rocketlite this many times and report medians (a shared machine's "
                         "load drifts; interleaving keeps the comparison fair)")
    ap.add_argument("--body", type=int, default=1024)
    ap.add_argument("--inflight", default="1,16")
    ap.add_argument("--target", default="", help="an already running rocketlite gRPC endpoint (host:port)")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.inflight.split(",")]
    body = os.urandom(args.body)
    results: dict[str, float] = {}

    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None
    echo_port = int(echo.stdout.readline())
    try:
        with contextlib.ExitStack() as stack:
            if args.target:
                target = args.target
            else:
                target = stack.enter_context(rocketlite_server())
            for n in levels:
                base_runs, send_runs = [], []
                for _ in range(max(1, args.repeat)):
                    base_runs.append(asyncio.run(run_sends(f"127.0.0.1:{echo_port}", n, args.seconds, body, "BenchTopic")))
                    send_runs.append(asyncio.run(run_sends(target, n, args.seconds, body, f"BenchSend{n}")))
                rate = statistics.median(base_runs)
                results[f"echo_baseline_calls_per_s@{n}"] = rate
                print(f"grpcio C-core echo baseline  {n:>2} in flight: {rate:8.0f} calls/s  "
                      f"(runs: {' '.join(f'{r:.0f}' for r in base_runs)})", flush=True)
                rate = statistics.median(send_runs)
                results[f"send_calls_per_s@{n}"] = rate
                print(f"rocketlite SendMessage       {n:>2} in flight: {rate:8.0f} calls/s  "
                      f"(runs: {' '.join(f'{r:.0f}' for r in send_runs)})", flush=True)
            for n in levels:
                # the send phase left plenty of messages in BenchSend<n>
                rate = asyncio.run(run_receives(target, n, args.seconds, f"BenchSend{levels[-1]}", f"bench-recv-{n}"))
                results[f"received_messages_per_s@{n}"] = rate
                print(f"rocketlite Receive+Ack       {n:>2} in flight: {rate:8.0f} messages/s", flush=True)
    finally:
        echo.terminate()
        echo.wait()
    for n in levels:
        base = results.get(f"echo_baseline_calls_per_s@{n}") or 1
        results[f"send_vs_echo@{n}"] = round(results[f"send_calls_per_s@{n}"] / base, 3)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
