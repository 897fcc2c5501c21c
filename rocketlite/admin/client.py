"""A small blocking RocketMQ remoting client for the admin verbs and quick produce/consume.

It speaks the same wire protocol as mqadmin (JSON headers, codec in
rocketlite/protocols/remoting/codec.py), so every call here works against rocketlite and against
an Apache RocketMQ NameServer + Broker. It uses only request codes that both understand: the
NameServer ones (routes, cluster info, topic list) and plain Broker ones (offsets, search by
time, query/view message, topic and config updates).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from rocketlite.protocols.remoting.codec import (
    FrameDecoder,
    RemotingCommand,
    RequestCode,
    ResponseCode,
    decode_json_body,
    encode_command,
    split_host_port,
)

# Request codes mqadmin uses that the codec module does not name.
GET_TOPIC_STATS_INFO = 202
GET_CONSUMER_CONNECTION_LIST = 203
GET_CONSUME_STATS = 208
INVOKE_BROKER_TO_RESET_OFFSET = 222

CLIENT_VERSION = 401  # V4_9_4: ask for standard JSON bodies


class RemotingError(Exception):
    def __init__(self, code: int, remark: str | None, request: int) -> None:
        super().__init__(f"CODE: {code}  DESC: {remark or ''} (request {request})")
        self.code = code
        self.remark = remark or ""


@dataclass
class Connection:
    addr: str
    sock: socket.socket
    decoder: FrameDecoder


class RemotingClient:
    """One connection per address, request/response by opaque, blocking with a timeout."""

    def __init__(self, namesrv: str, *, timeout: float = 10.0) -> None:
        self.namesrv = namesrv.split(";")[0].strip()
        self.timeout = timeout
        self._conns: dict[str, Connection] = {}
        self._opaque = itertools.count(1)
        self.instance = f"rocketlite-admin@{os.getpid()}"

    # -- transport ----------------------------------------------------------------------------
    def _conn(self, addr: str) -> Connection:
        c = self._conns.get(addr)
        if c is None:
            host, port = split_host_port(addr)
            sock = socket.create_connection((host, port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = self._conns[addr] = Connection(addr, sock, FrameDecoder())
        return c

    def close(self) -> None:
        for c in self._conns.values():
            try:
                c.sock.close()
            except OSError:
                pass
        self._conns.clear()

    def __enter__(self) -> "RemotingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def invoke(self, addr: str, code: int, ext: dict[str, Any] | None = None, body: bytes = b"",
               *, check: bool = True, timeout: float | None = None) -> RemotingCommand:
        c = self._conn(addr)
        opaque = next(self._opaque)
        cmd = RemotingCommand(code=code, opaque=opaque, language="PYTHON", version=CLIENT_VERSION,
                              ext={k: _s(v) for k, v in (ext or {}).items() if v is not None}, body=body)
        c.sock.settimeout(timeout or self.timeout)
        try:
            c.sock.sendall(encode_command(cmd))
            while True:
                resp = c.decoder.next_command()
                if resp is None:
                    data = c.sock.recv(65536)
                    if not data:
                        raise ConnectionError(f"{addr} closed the connection")
                    c.decoder.feed(data)
                    continue
                if resp.is_response and resp.opaque == opaque:
                    break
                # broker-initiated requests (e.g. consumer ids changed) are ignored here
        except (OSError, ConnectionError):
            self._conns.pop(addr, None)
            c.sock.close()
            raise
        if check and resp.code != ResponseCode.SUCCESS:
            raise RemotingError(resp.code, resp.remark, code)
        return resp

    # -- NameServer ---------------------------------------------------------------------------
    def cluster_info(self) -> dict[str, Any]:
        resp = self.invoke(self.namesrv, RequestCode.GET_BROKER_CLUSTER_INFO)
        return decode_json_body(resp.body) or {}

    def brokers(self, cluster: str | None = None) -> list[tuple[str, str, str]]:
        """(cluster, broker name, master address) of every broker (of one cluster)."""
        info = self.cluster_info()
        out = []
        for cname, names in (info.get("clusterAddrTable") or {}).items():
            if cluster and cname != cluster:
                continue
            for bname in names:
                bd = (info.get("brokerAddrTable") or {}).get(bname) or {}
                addrs = bd.get("brokerAddrs") or {}
                master = addrs.get("0") or addrs.get(0)
                if master:
                    out.append((cname, bname, master))
        return sorted(out)

    def route(self, topic: str) -> dict[str, Any]:
        resp = self.invoke(self.namesrv, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic})
        return decode_json_body(resp.body) or {}

    def topic_queues(self, topic: str) -> list[tuple[str, str, int, int]]:
        """(broker name, master address, read queue count, write queue count) per broker."""
        r = self.route(topic)
        addrs = {}
        for bd in r.get("brokerDatas") or []:
            a = bd.get("brokerAddrs") or {}
            addrs[bd.get("brokerName")] = a.get("0") or a.get(0)
        out = []
        for qd in r.get("queueDatas") or []:
            addr = addrs.get(qd.get("brokerName"))
            if addr:
                out.append((qd["brokerName"], addr, int(qd.get("readQueueNums", 0)), int(qd.get("writeQueueNums", 0))))
        return sorted(out)

    def topic_list(self) -> list[str]:
        resp = self.invoke(self.namesrv, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        return sorted((decode_json_body(resp.body) or {}).get("topicList") or [])

    # -- Broker -------------------------------------------------------------------------------
    def max_offset(self, addr: str, topic: str, qid: int) -> int:
        return int(self.invoke(addr, RequestCode.GET_MAX_OFFSET, {"topic": topic, "queueId": qid}).ext["offset"])

    def min_offset(self, addr: str, topic: str, qid: int) -> int:
        return int(self.invoke(addr, RequestCode.GET_MIN_OFFSET, {"topic": topic, "queueId": qid}).ext["offset"])

    def last_store_time(self, addr: str, topic: str, qid: int, max_offset: int) -> int:
        """Store time of the newest message of a queue (0 when empty), via a pull of one record."""
        if max_offset <= 0:
            return 0
        resp = self.invoke(addr, RequestCode.PULL_MESSAGE, {
            "consumerGroup": "TOOLS_CONSUMER", "topic": topic, "queueId": qid, "queueOffset": max_offset - 1,
            "maxMsgNums": 1, "sysFlag": 0x4, "commitOffset": 0, "suspendTimeoutMillis": 0,
            "subscription": "*", "subVersion": 0, "expressionType": "TAG"}, check=False)
        if resp.code != ResponseCode.SUCCESS or not resp.body:
            return 0
        from rocketlite.protocols.remoting.codec import decode_records

        recs = decode_records(resp.body)
        return recs[-1].store_timestamp if recs else 0

    def consumer_offset(self, addr: str, group: str, topic: str, qid: int) -> int | None:
        resp = self.invoke(addr, RequestCode.QUERY_CONSUMER_OFFSET,
                           {"consumerGroup": group, "topic": topic, "queueId": qid, "setZeroIfNotFound": "false"},
                           check=False)
        if resp.code == ResponseCode.SUCCESS:
            return int(resp.ext.get("offset", -1))
        return None

    def update_consumer_offset(self, addr: str, group: str, topic: str, qid: int, offset: int) -> None:
        self.invoke(addr, RequestCode.UPDATE_CONSUMER_OFFSET,
                    {"consumerGroup": group, "topic": topic, "queueId": qid, "commitOffset": offset})

    def search_offset(self, addr: str, topic: str, qid: int, timestamp: int) -> int:
        resp = self.invoke(addr, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP,
                           {"topic": topic, "queueId": qid, "timestamp": timestamp})
        return int(resp.ext["offset"])

    def consumer_ids(self, addr: str, group: str) -> list[str]:
        resp = self.invoke(addr, RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": group}, check=False)
        if resp.code != ResponseCode.SUCCESS:
            return []
        return list((decode_json_body(resp.body) or {}).get("consumerIdList") or [])

    def subscription_groups(self, addr: str) -> list[str]:
        resp = self.invoke(addr, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
        return sorted((decode_json_body(resp.body) or {}).get("subscriptionGroupTable") or {})

    def topic_configs(self, addr: str) -> dict[str, Any]:
        resp = self.invoke(addr, RequestCode.GET_ALL_TOPIC_CONFIG)
        return (decode_json_body(resp.body) or {}).get("topicConfigTable") or {}

    def runtime_info(self, addr: str) -> dict[str, str]:
        resp = self.invoke(addr, RequestCode.GET_BROKER_RUNTIME_INFO, check=False)
        if resp.code != ResponseCode.SUCCESS:
            return {}
        return dict((decode_json_body(resp.body) or {}).get("table") or {})


def _s(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def now_ms() -> int:
    return int(time.time() * 1000)
