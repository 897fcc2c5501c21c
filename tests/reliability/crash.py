"""Crash-safety harness: SIGKILL a real rocketlite process under load from several producers, restart it,
N rounds; then check that every acknowledged message is in the log exactly once.

Used by tests/reliability/test_crash_safety.py (short rounds) and benchmarks/crash_rounds.py (20 rounds).

Per round:
1. producers start (each its own process, see load_clients.py / grpc_producer.py) and print every
   acknowledgement; an offset committer commits increasing offsets for a consumer group;
2. once every producer has some acknowledgements, after a random pause, the broker is SIGKILLed;
3. the producers are stopped, the broker restarts on the same ports from the same data directory
   (LMDB opens as it is: there is no repair step), and the committed offset is read back: it must not
   be below the last acknowledged commit.
Before round 1 a persistent MQTT session (clean session off) subscribes to ``crash/#`` and goes away;
after the last round it reconnects and must receive every acknowledged MQTT message.
At the end the broker stops and the harness opens the LMDB store itself and reads every queue of the
test topics: each acknowledged body must be there exactly once (the producers never retry).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.support.server import REPO, RocketliteProcess

HERE = Path(__file__).resolve().parent
INTEROP = Path(os.environ.get("ROCKETLITE_INTEROP_DIR", REPO / ".interop"))
GRPC_PYTHON = INTEROP / "venv-grpc-python" / "bin" / "python"

TOPIC_REMOTING = "CrashR"
TOPIC_GRPC = "CrashG"
TOPIC_MQTT = "crash"  # MQTT crash/<tag>/<i> is stored in RocketMQ topic "crash"
GROUP = "crash-offsets"


@dataclass
class CrashReport:
    rounds: int = 0
    acked: Counter[str] = field(default_factory=Counter)  # protocol -> acknowledged messages
    lost: dict[str, list[str]] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    stored: int = 0
    offsets_committed: int = 0
    offset_regressions: list[str] = field(default_factory=list)
    session_expected: int = 0
    session_received: int = 0
    session_missing: list[str] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (any(self.lost.values()) or any(self.duplicated.values()) or self.offset_regressions
                    or self.session_missing or self.errors)

    def summary(self) -> str:
        worst = max(self.restart_seconds, default=0.0)
        return (
            f"rounds={self.rounds} acked={dict(self.acked)} total_acked={sum(self.acked.values())} "
            f"stored_checked={self.stored} lost={sum(len(v) for v in self.lost.values())} "
            f"duplicated={sum(len(v) for v in self.duplicated.values())} offsets_committed={self.offsets_committed} "
            f"offset_regressions={len(self.offset_regressions)} mqtt_session={self.session_received}/"
            f"{self.session_expected} missing={len(self.session_missing)} max_restart_s={worst:.2f} "
            f"errors={self.errors[:3]}"
        )


class Client:
    """A load process whose stdout lines are collected by a thread."""

    def __init__(self, kind: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, cwd=str(REPO), text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def count(self) -> int:
        return len(self.lines)

    def finish(self, grace: float = 5.0) -> list[str]:
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)
        return self.lines


def grpc_available() -> bool:
    return GRPC_PYTHON.exists()


def _query_offset(srv: RocketliteProcess) -> int | None:
    import trio

    from rocketlite.protocols.remoting.client import RemotingClient

    host, port = srv.addr("remoting")

    async def main() -> int | None:
        async with RemotingClient.connect(host, port) as c:
            r = await c.request(14, consumerGroup=GROUP, topic=TOPIC_REMOTING, queueId=0, setZeroIfNotFound="false",
                                timeout=10)
            return int(r.ext["offset"]) if r.code == 0 else None

    return trio.run(main)


def _mqtt_session(srv: RocketliteProcess, *, subscribe: bool, expect: set[str] | None = None,
                  timeout: float = 60.0) -> list[str]:
    """Connect the persistent session ``crash-sub``; subscribe (first time) or collect what it kept."""
    import paho.mqtt.client as paho

    host, port = srv.addr("mqtt")
    got: list[str] = []
    seen: set[str] = set()
    done = threading.Event()
    subscribed = threading.Event()
    last = [time.monotonic()]

    def on_message(c: object, u: object, msg: paho.MQTTMessage) -> None:
        body = msg.payload.decode()
        got.append(body)
        seen.add(body)
        last[0] = time.monotonic()
        if expect is not None and expect <= seen:
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="crash-sub", clean_session=False,
                    protocol=paho.MQTTv311)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.max_inflight_messages_set(100)
    c.connect(host, port, keepalive=60)
    c.loop_start()
    try:
        if subscribe:
            c.subscribe("crash/#", qos=1)
            if not subscribed.wait(10):
                raise AssertionError("no SUBACK for the persistent session")
        else:
            end = time.monotonic() + timeout
            while not done.wait(0.2) and time.monotonic() < end:
                if expect is not None and not expect and time.monotonic() - last[0] > 2:
                    break
                if time.monotonic() - last[0] > 10:  # nothing new for 10 s
                    break
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def _read_log(data_dir: Path, topics: set[str]) -> dict[str, Counter[str]]:
    """Open the LMDB store directly (the broker is stopped) and count bodies per topic."""
    import trio

    from rocketlite.storage.lmdb_store import LmdbStore

    async def main() -> dict[str, Counter[str]]:
        store = LmdbStore(data_dir, flush="sync", min_free_disk_mb=0)
        await store.open()
        out: dict[str, Counter[str]] = {t: Counter() for t in topics}
        try:
            for topic, qid in list(store.queues()):
                if topic not in topics:
                    continue
                off, end = store.min_offset(topic, qid), store.max_offset(topic, qid)
                while off < end:
                    msgs = await store.read_queue(topic, qid, off, 1000)
                    if not msgs:
                        break
                    for m in msgs:
                        out[topic][m.body.decode(errors="replace")] += 1
                    off = msgs[-1].queue_offset + 1
        finally:
            await store.close()
        return out

    return trio.run(main)


def run_crash_rounds(
    data_dir: Path,
    *,
    rounds: int = 3,
    protocols: tuple[str, ...] = ("remoting", "mqtt1", "grpc"),
    producers: int = 3,
    flush: str = "sync",
    min_acks: int = 20,
    seed: int | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> CrashReport:
    rng = random.Random(seed)
    rep = CrashReport()
    acked: dict[str, set[str]] = {p: set() for p in protocols}
    srv = RocketliteProcess(data_dir, extra_args=["--flush", flush, "--set", "storage.min_free_disk_mb=0"])
    srv.start()
    last_offset = -1
    try:
        if any(p.startswith("mqtt") for p in protocols):
            _mqtt_session(srv, subscribe=True)
        for rnd in range(rounds):
            clients: list[Client] = []
            for p in protocols:
                if p == "remoting":
                    clients.append(Client(p, [sys.executable, str(HERE / "load_clients.py"), "remoting",
                                              srv.endpoint("remoting"), TOPIC_REMOTING, f"r{rnd}", str(producers)]))
                    clients.append(Client("offsets", [sys.executable, str(HERE / "load_clients.py"), "offsets",
                                                      srv.endpoint("remoting"), GROUP, TOPIC_REMOTING,
                                                      str(last_offset + 1)]))
                elif p in ("mqtt1", "mqtt2"):
                    clients.append(Client(p, [sys.executable, str(HERE / "load_clients.py"), "mqtt",
                                              srv.endpoint("mqtt"), p[-1], f"{p}r{rnd}", str(producers)]))
                elif p == "grpc":
                    home = data_dir.parent / "grpc-home"
                    home.mkdir(parents=True, exist_ok=True)
                    clients.append(Client(p, [str(GRPC_PYTHON), str(HERE / "grpc_producer.py"), srv.endpoint("grpc"),
                                              TOPIC_GRPC, f"g{rnd}", str(producers)], env={"HOME": str(home)}))
                else:
                    raise ValueError(f"unknown protocol {p}")
            # wait for load from everyone (bounded), then kill at a random moment
            end = time.monotonic() + 20
            while time.monotonic() < end and any(c.count() < min_acks for c in clients):
                if all(c.proc.poll() is not None for c in clients if c.count() < min_acks):
                    break  # the slow ones died: no point waiting
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.6))
            srv.kill()
            for c in clients:
                lines = c.finish()
                if c.kind == "offsets":
                    offs = [int(x.split()[1]) for x in lines if x.startswith("O ")]
                    rep.offsets_committed += len(offs)
                    if offs:
                        last_offset = max(last_offset, max(offs))
                else:
                    bodies = [x.split()[1] for x in lines if x.startswith("A ")]
                    rep.acked[c.kind] += len(bodies)
                    acked[c.kind].update(bodies)
                    errs = [x for x in lines if x.startswith("E ")]
                    if errs:
                        rep.errors.append(f"{c.kind}: {errs[0]}")
                    if not bodies:
                        rep.errors.append(f"round {rnd}: {c.kind} got no acknowledgement")
            t0 = time.monotonic()
            srv.start()
            rep.restart_seconds.append(time.monotonic() - t0)
            if "remoting" in protocols and last_offset >= 0:
                got = _query_offset(srv)
                if got is None or got < last_offset:
                    rep.offset_regressions.append(f"round {rnd}: committed {last_offset}, read back {got}")
            rep.rounds += 1
            log(f"round {rnd + 1}/{rounds}: {rep.summary()}")
        mqtt_expected = set().union(*(acked[p] for p in protocols if p.startswith("mqtt")))
        if mqtt_expected:
            got = _mqtt_session(srv, subscribe=False, expect=mqtt_expected, timeout=30 + len(mqtt_expected) / 200)
            rep.session_expected = len(mqtt_expected)
            rep.session_received = len(set(got) & mqtt_expected)
            rep.session_missing = sorted(mqtt_expected - set(got))
    finally:
        srv.stop()
    topic_of = {"remoting": TOPIC_REMOTING, "grpc": TOPIC_GRPC, "mqtt1": TOPIC_MQTT, "mqtt2": TOPIC_MQTT}
    stored = _read_log(data_dir, {topic_of[p] for p in protocols})
    for p in protocols:
        counts = stored[topic_of[p]]
        rep.lost[p] = sorted(b for b in acked[p] if counts[b] == 0)
        rep.duplicated[p] = sorted(b for b in acked[p] if counts[b] > 1)
    rep.stored = sum(sum(c.values()) for c in stored.values())
    return rep
